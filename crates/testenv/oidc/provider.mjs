// A real OpenID Connect provider on loopback for Ferry's tests: panva's oidc-provider with a
// fixed set of clients and users, a username/password login form, and consent granted
// automatically, so a browser goes from the login form straight back to the relying party.
//
//   node provider.mjs config.json
//
// config.json: {
//   "port": 0 | N,                    // 0: any free port
//   "clients": [{"client_id", "client_secret"?, "redirect_uris": [...],
//                "token_endpoint_auth_method"?, ...any other client metadata}],
//   "users": [{"username", "password", "email", "name", "groups": [...]}]
// }
// Prints `listening http://127.0.0.1:PORT` (the issuer) once it accepts requests.
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const users = new Map((config.users || []).map((u) => [u.username, u]));

const clients = (config.clients || []).map((c) => ({
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: c.client_secret ? 'client_secret_basic' : 'none',
  ...c,
}));

// The ID Token signing key: a fresh RS256 key each start, published at /jwks.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };

const escape = (s) => String(s).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

function loginPage(uid, clientId, error, username = '') {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in to ${escape(clientId)}</h1>
${error ? `<p id="error" role="alert">${escape(error)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${escape(uid)}">
  <label>Username <input type="text" id="username" name="username" value="${escape(username)}" autocomplete="username" autofocus></label>
  <label>Password <input type="password" id="password" name="password" autocomplete="current-password"></label>
  <button type="submit" id="login">Sign in</button>
</form>
</body></html>
`;
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      body += chunk;
      if (body.length > 65536) reject(new Error('form too large'));
    });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

// Grants the client every scope and claim it asks for: no consent screen for these clients.
async function grantAll(ctx) {
  const { Grant } = ctx.oidc.provider;
  const clientId = ctx.oidc.client.clientId;
  const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(clientId);
  let grant = grantId ? await Grant.find(grantId) : undefined;
  if (!grant) {
    grant = new Grant({ clientId, accountId: ctx.oidc.session.accountId });
  }
  if (ctx.oidc.params.scope) grant.addOIDCScope(ctx.oidc.params.scope);
  const claims = ctx.oidc.claims || {};
  const requested = [...Object.keys(claims.id_token || {}), ...Object.keys(claims.userinfo || {})];
  if (requested.length) grant.addOIDCClaims(requested);
  await grant.save();
  return grant;
}

async function interaction(provider, req, res) {
  const uid = decodeURIComponent(new URL(req.url, 'http://x').pathname.split('/')[2] || '');
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(`no such interaction: ${err.message}\n`);
    return;
  }
  const html = (status, body) => {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(body);
  };
  const clientId = details.params.client_id;
  if (details.prompt.name === 'login') {
    if (req.method !== 'POST') {
      html(200, loginPage(uid, clientId));
      return;
    }
    const form = await readForm(req);
    const username = form.get('username') || '';
    const user = users.get(username);
    if (!user || user.password !== form.get('password')) {
      console.log(`login refused for ${JSON.stringify(username)}`);
      html(401, loginPage(uid, clientId, 'Invalid username or password.', username));
      return;
    }
    console.log(`login ${username} for ${clientId}`);
    await provider.interactionFinished(req, res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
    return;
  }
  // Consent (only if loadExistingGrant did not already cover the request): granted at once.
  const { Grant } = provider;
  let grant = details.grantId ? await Grant.find(details.grantId) : undefined;
  if (!grant) grant = new Grant({ accountId: details.session.accountId, clientId });
  const missing = details.prompt.details || {};
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

let provider;
let handle;
const server = createServer((req, res) => {
  if (!provider) {
    res.writeHead(503).end();
    return;
  }
  if (req.url.startsWith('/interaction/')) {
    interaction(provider, req, res).catch((err) => {
      console.error('interaction failed:', err);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`interaction failed: ${err.message}\n`);
    });
    return;
  }
  handle(req, res);
});

server.listen(config.port || 0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  provider = new Provider(issuer, {
    clients,
    jwks: { keys: [jwk] },
    // Cookies are signed; over plain http koa sets them without the Secure attribute. Cookies
    // are per host, not per port: prefixed names keep clear of the relying party's on 127.0.0.1.
    cookies: {
      keys: [randomBytes(32).toString('base64url')],
      names: { session: 'op_session', interaction: 'op_interaction', resume: 'op_interaction_resume' },
    },
    findAccount: async (_ctx, sub) => {
      const user = users.get(sub);
      if (!user) return undefined;
      return {
        accountId: sub,
        claims: async () => ({
          sub,
          preferred_username: user.username,
          name: user.name,
          email: user.email,
          email_verified: true,
          groups: user.groups || [],
        }),
      };
    },
    // Each scope releases these claims; `groups` is a scope of its own, as Dex and Argo CD use it.
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    // Put the scopes' claims in the ID Token too (not only at /me), as Dex does.
    conformIdTokenClaims: false,
    loadExistingGrant: grantAll,
    interactions: { url: (_ctx, i) => `/interaction/${i.uid}` },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    // Every client must use PKCE, with S256 only.
    pkce: { methods: ['S256'], required: () => true },
    clientBasedCORS: () => true,
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 120,
      IdToken: 3600,
      Interaction: 3600,
      Session: 86400,
      Grant: 86400,
      RefreshToken: 86400,
    },
  });
  handle = provider.callback();
  provider.on('server_error', (_ctx, err) => console.error('server_error:', err));
  provider.on('grant.error', (_ctx, err) => console.error('grant.error:', err.message, err.error_description || ''));
  provider.on('authorization.error', (_ctx, err) => console.error('authorization.error:', err.message, err.error_description || ''));
  console.log(`listening ${issuer}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)).closeAllConnections());
}
