#!/usr/bin/env bash
# End-to-end check of provider.mjs with curl, no browser: for a confidential client (browser
# login: client_secret_basic) and a public one (CLI login: none), the authorization request with
# PKCE S256 + state + nonce, the login form (a wrong password first), the redirect back with
# ?code=&state=, the code exchange, and the ID Token's claims and signature against /jwks.
#   bash crates/testenv/oidc/check.sh   (after `make setup`; FERRY_OIDC_PROVIDER_DIR overrides)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSION="$(node -p 'require(process.argv[1]).dependencies["oidc-provider"]' "$HERE/package.json")"
INSTALL="${FERRY_OIDC_PROVIDER_DIR:-${FERRY_CACHE:-$HOME/.cache/ferry}/tools/oidc-provider-$VERSION}"
[ -f "$INSTALL/node_modules/oidc-provider/package.json" ] \
  || { echo "oidc-provider $VERSION is not installed in $INSTALL: run \`make setup\`" >&2; exit 1; }

passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() { local what="$1"; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }
# like "$1" GLOB: "$1" matches the glob "$2".
like() { [[ "$1" == $2 ]]; }
# has FILE TEXT: FILE contains TEXT.
has() { grep -qF -- "$2" "$1"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ferry-oidc-check.XXXXXX")"
PID=""
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# As the Rust wrapper does: the script next to a link to the installed node_modules (ES modules
# resolve packages from the importing file's folder; NODE_PATH does not apply to them).
cp "$HERE/provider.mjs" "$WORK/provider.mjs"
ln -s "$INSTALL/node_modules" "$WORK/node_modules"
UI_REDIRECT="https://127.0.0.1:$((20000 + RANDOM % 20000))/auth/callback"
CLI_REDIRECT="http://localhost:8085/auth/callback"
UI_SECRET="$(openssl rand -hex 16)"
cat >"$WORK/config.json" <<JSON
{
  "port": 0,
  "clients": [
    {"client_id": "ferry", "client_secret": "$UI_SECRET", "redirect_uris": ["$UI_REDIRECT"]},
    {"client_id": "ferry-cli", "token_endpoint_auth_method": "none", "redirect_uris": ["$CLI_REDIRECT"]}
  ],
  "users": [
    {"username": "alice", "password": "alice-pass", "email": "alice@example.com", "name": "Alice Admin", "groups": ["ferry-admins"]},
    {"username": "bob", "password": "bob-pass", "email": "bob@example.com", "name": "Bob Reader", "groups": ["ferry-readers"]}
  ]
}
JSON
chmod 600 "$WORK/config.json"

(cd "$WORK" && exec node provider.mjs config.json) >"$WORK/provider.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  grep -q '^listening ' "$WORK/provider.log" && break
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/provider.log"; exit 1; }
  sleep 0.1
done
ISSUER="$(sed -n 's/^listening //p' "$WORK/provider.log")"
[ -n "$ISSUER" ] || { cat "$WORK/provider.log"; exit 1; }
echo "provider: $ISSUER (oidc-provider $VERSION, node $(node --version))"

json() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const v=JSON.parse(s);console.log(eval(process.argv[1]))})' "$1"; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

DISCOVERY="$(curl -sf "$ISSUER/.well-known/openid-configuration")"
AUTH="$(json v.authorization_endpoint <<<"$DISCOVERY")"
TOKEN="$(json v.token_endpoint <<<"$DISCOVERY")"
echo "discovery: issuer=$(json v.issuer <<<"$DISCOVERY") authorization=$AUTH token=$TOKEN"
echo "           jwks=$(json v.jwks_uri <<<"$DISCOVERY") userinfo=$(json v.userinfo_endpoint <<<"$DISCOVERY")"
echo "           scopes=$(json 'v.scopes_supported.join(" ")' <<<"$DISCOVERY") pkce=$(json 'v.code_challenge_methods_supported.join(" ")' <<<"$DISCOVERY")"
check "discovery issuer is $ISSUER" [ "$(json v.issuer <<<"$DISCOVERY")" = "$ISSUER" ]
check "groups is a supported scope and claim" \
  [ "$(json 'v.scopes_supported.includes("groups") && v.claims_supported.includes("groups")' <<<"$DISCOVERY")" = true ]

# curl one request without following redirects: prints "<status> <Location>".
step() { curl -s -o "$WORK/body" -w '%{http_code} %{redirect_url}' -b "$WORK/jar" -c "$WORK/jar" "$@"; }

# $1 client_id, $2 redirect_uri, $3 username, $4 password, $5 client secret ("" for a public client)
login() {
  local client="$1" redirect="$2" user="$3" pass="$4" secret="$5"
  rm -f "$WORK/jar"
  local verifier challenge state nonce out loc
  verifier="$(openssl rand 32 | b64url)"
  challenge="$(printf %s "$verifier" | openssl dgst -binary -sha256 | b64url)"
  state="$(openssl rand 16 | b64url)"
  nonce="$(openssl rand 16 | b64url)"
  echo "--- $client as $user (redirect $redirect)"
  out="$(step -G "$AUTH" --data-urlencode "client_id=$client" --data-urlencode "redirect_uri=$redirect" \
    -d response_type=code --data-urlencode "scope=openid profile email groups" \
    -d "state=$state" -d "nonce=$nonce" -d "code_challenge=$challenge" -d code_challenge_method=S256)"
  loc="${out#* }"
  check "authorization request redirects to the login interaction ($out)" like "$out" "303 $ISSUER/interaction/*"
  out="$(step "$loc")"
  check "login form has input name=username" has "$WORK/body" '<input type="text" id="username" name="username"'
  check "login form has input name=password" has "$WORK/body" '<input type="password" id="password" name="password"'
  check "login form has button#login" has "$WORK/body" '<button type="submit" id="login">'
  check "login form posts to its own URL" has "$WORK/body" "<form id=\"login-form\" method=\"post\" action=\"${loc#"$ISSUER"}\">"
  out="$(step "$loc" --data-urlencode "username=$user" --data-urlencode "password=wrong-$pass")"
  check "a wrong password is refused (HTTP ${out%% *})" [ "${out%% *}" = 401 ]
  check "the form is shown again with an error" has "$WORK/body" '<p id="error" role="alert">Invalid username or password.</p>'

  out="$(step "$loc" --data-urlencode "username=$user" --data-urlencode "password=$pass")"
  check "the right password continues the authorization ($out)" like "$out" "303 $ISSUER/auth/*"
  loc="${out#* }"
  out="$(step "$loc")"
  loc="${out#* }"
  check "consent skipped: straight back to the client ($out)" like "$out" "303 $redirect?code=*"
  local q="${loc#*\?}" code got_state
  code="$(node -p 'new URLSearchParams(process.argv[1]).get("code")' "$q")"
  got_state="$(node -p 'new URLSearchParams(process.argv[1]).get("state")' "$q")"
  check "state comes back unchanged" [ "$got_state" = "$state" ]
  local auth_args=(-d "client_id=$client")
  [ -n "$secret" ] && auth_args=(-u "$client:$secret")
  curl -s "${auth_args[@]}" "$TOKEN" -d grant_type=authorization_code --data-urlencode "code=$code" \
    --data-urlencode "redirect_uri=$redirect" -d "code_verifier=wrong$verifier" >"$WORK/bad.json"
  check "a wrong code_verifier is refused ($(cat "$WORK/bad.json"))" has "$WORK/bad.json" invalid_grant
  # The code is spent by the failed attempt above (codes are single use); get a fresh one: the
  # session cookie now logs in without the form.
  out="$(step -G "$AUTH" --data-urlencode "client_id=$client" --data-urlencode "redirect_uri=$redirect" \
    -d response_type=code --data-urlencode "scope=openid profile email groups" \
    -d "state=$state" -d "nonce=$nonce" -d "code_challenge=$challenge" -d code_challenge_method=S256)"
  check "a second authorization reuses the session (SSO, no form) ($out)" like "$out" "303 $redirect?code=*"
  q="${out#*\?}"
  code="$(node -p 'new URLSearchParams(process.argv[1]).get("code")' "$q")"
  curl -s "${auth_args[@]}" "$TOKEN" -d grant_type=authorization_code --data-urlencode "code=$code" \
    --data-urlencode "redirect_uri=$redirect" -d "code_verifier=$verifier" >"$WORK/tokens.json"
  local method=none
  [ -n "$secret" ] && method=client_secret_basic
  check "code exchange with $method + code_verifier" has "$WORK/tokens.json" '"id_token"'
  local id_token
  id_token="$(json v.id_token <"$WORK/tokens.json")"
  echo "id_token payload: $(node -p 'JSON.stringify(JSON.parse(Buffer.from(process.argv[1].split(".")[1], "base64url")))' "$id_token")"
  curl -sf "$ISSUER/jwks" >"$WORK/jwks.json"
  node - "$id_token" "$WORK/jwks.json" "$ISSUER" "$client" "$nonce" "$user" "$WORK/verdict" <<'JS'
const crypto = require('node:crypto');
const fs = require('node:fs');
const [tok, jwksFile, iss, aud, nonce, user, out] = process.argv.slice(2);
const [h, p, s] = tok.split('.');
const header = JSON.parse(Buffer.from(h, 'base64url'));
const claims = JSON.parse(Buffer.from(p, 'base64url'));
const jwk = JSON.parse(fs.readFileSync(jwksFile)).keys.find((k) => k.kid === header.kid);
const sigOk = header.alg === 'RS256' && !!jwk
  && crypto.verify('RSA-SHA256', Buffer.from(`${h}.${p}`), crypto.createPublicKey({ key: jwk, format: 'jwk' }), Buffer.from(s, 'base64url'));
const expect = {
  'RS256 signature verifies against /jwks': sigOk,
  [`iss is ${iss}`]: claims.iss === iss,
  [`aud is ${aud}`]: claims.aud === aud || (Array.isArray(claims.aud) && claims.aud.includes(aud)),
  'nonce echoes the request': claims.nonce === nonce,
  [`sub is ${user}`]: claims.sub === user,
  'email and name present': !!claims.email && !!claims.name,
  'groups is a non-empty array': Array.isArray(claims.groups) && claims.groups.length > 0,
};
fs.writeFileSync(out, Object.entries(expect).map(([k, v]) => `${v ? 'ok' : 'FAIL'}\t${k}`).join('\n') + '\n');
JS
  while IFS=$'\t' read -r verdict what; do
    if [ "$verdict" = ok ]; then ok "id_token: $what"; else fail "id_token: $what"; fi
  done <"$WORK/verdict"
}

login ferry "$UI_REDIRECT" alice alice-pass "$UI_SECRET"
login ferry-cli "$CLI_REDIRECT" bob bob-pass ""

# PKCE is required of every client: an authorization request without it is sent back with an error.
out="$(step -G "$AUTH" -d client_id=ferry --data-urlencode "redirect_uri=$UI_REDIRECT" -d response_type=code \
  -d scope=openid -d state=s1 -d nonce=n1)"
check "an authorization request without PKCE is refused ($out)" like "$out" "303 $UI_REDIRECT?error=invalid_request*"

echo "--- provider log"
cat "$WORK/provider.log"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
