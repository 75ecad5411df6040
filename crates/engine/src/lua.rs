//! Lua health checks from `argocd-cm` (`resource.customizations.health.<group_kind>`),
//! with Argo CD's contract: the live object is the global `obj`; the script
//! returns a table with `status` (Healthy, Progressing, Degraded, Suspended,
//! Missing, Unknown) and an optional `message`.
//!
//! Each run gets a fresh interpreter with a memory limit and a deadline, and
//! without the file, process and module loaders (`io`, `os.execute`,
//! `require`, `dofile`, `load`). `useOpenLibs` adds `coroutine` and `utf8`,
//! never those: unlike Argo CD, a script in a ConfigMap cannot read the
//! controller's credentials. `pcall` is removed so a script cannot catch the
//! deadline.

use ferry_model::HealthStatus;
use mlua::{HookTriggers, Lua, LuaOptions, LuaSerdeExt, StdLib, Table, Value as LuaValue, VmState};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Argo CD allows a health script one second.
pub const TIMEOUT: Duration = Duration::from_secs(1);
const MEMORY_LIMIT: usize = 32 << 20;

/// Wraps the pattern functions so subject × pattern stays small enough to
/// finish within the deadline however the pattern backtracks.
const PATTERN_GUARD: &str = r#"
local guarded = { "find", "match", "gmatch", "gsub" }
for _, name in ipairs(guarded) do
  local original = string[name]
  string[name] = function(s, pattern, ...)
    if type(s) == "string" and type(pattern) == "string" and #s * (#pattern + 1) > 65536 then
      error("string." .. name .. ": subject and pattern too long for a health check", 2)
    end
    return original(s, pattern, ...)
  end
end
"#;

const STATUSES: [&str; 6] = [
    "Healthy",
    "Progressing",
    "Degraded",
    "Suspended",
    "Missing",
    "Unknown",
];

/// Runs `script` over `obj`. Errors are Argo CD's: the app shows the resource
/// as Unknown with this message.
pub fn health(script: &str, obj: &Value, open_libs: bool) -> Result<HealthStatus, String> {
    let lua = sandbox(open_libs).map_err(|e| format!("lua: {e}"))?;
    let options = mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let globals = lua.globals();
    let obj = lua
        .to_value_with(obj, options)
        .map_err(|e| format!("lua: {e}"))?;
    globals.set("obj", obj).map_err(|e| format!("lua: {e}"))?;
    let deadline = Instant::now() + TIMEOUT;
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(1000),
        move |_, _| {
            if Instant::now() >= deadline {
                Err(mlua::Error::runtime(format!(
                    "health script exceeded {}s",
                    TIMEOUT.as_secs()
                )))
            } else {
                Ok(VmState::Continue)
            }
        },
    )
    .map_err(|e| format!("lua: {e}"))?;
    let result: LuaValue = lua
        .load(script)
        .set_name("health.lua")
        .set_mode(mlua::chunk::ChunkMode::Text)
        .eval()
        .map_err(|e| first_line(&e.to_string()))?;
    let LuaValue::Table(table) = result else {
        return Err(format!(
            "expect table output from Lua script, not {}",
            result.type_name()
        ));
    };
    read_status(&table)
}

fn read_status(table: &Table) -> Result<HealthStatus, String> {
    let status: Option<String> = table.get("status").ok();
    let message: Option<String> = table
        .get::<Option<String>>("message")
        .ok()
        .flatten()
        .filter(|m| !m.is_empty());
    match status {
        Some(s) if STATUSES.contains(&s.as_str()) => Ok(HealthStatus { status: s, message }),
        _ => Ok(HealthStatus {
            status: "Unknown".into(),
            message: Some("Lua returned an invalid health status".into()),
        }),
    }
}

fn sandbox(open_libs: bool) -> mlua::Result<Lua> {
    let mut libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::OS;
    if open_libs {
        libs |= StdLib::COROUTINE | StdLib::UTF8;
    }
    let lua = Lua::new_with(libs, LuaOptions::default())?;
    lua.set_memory_limit(MEMORY_LIMIT)?;
    let globals = lua.globals();
    for name in [
        "dofile", "loadfile", "load", "require", "pcall", "xpcall", "print",
    ] {
        globals.set(name, LuaValue::Nil)?;
    }
    // The instruction hook cannot interrupt one long C call, and Lua patterns
    // backtrack: bound what a pattern function may be asked to scan.
    lua.load(PATTERN_GUARD).set_name("ferry-sandbox").exec()?;
    if let Ok(os) = globals.get::<Table>("os") {
        // Argo CD's "safe os": clocks and dates only.
        for name in [
            "execute",
            "exit",
            "getenv",
            "remove",
            "rename",
            "tmpname",
            "setlocale",
        ] {
            os.set(name, LuaValue::Nil)?;
        }
    }
    Ok(lua)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CERT: &str = r#"
hs = {}
if obj.status ~= nil then
  if obj.status.conditions ~= nil then
    for i, condition in ipairs(obj.status.conditions) do
      if condition.type == "Ready" and condition.status == "False" then
        hs.status = "Degraded"
        hs.message = condition.message
        return hs
      end
      if condition.type == "Ready" and condition.status == "True" then
        hs.status = "Healthy"
        hs.message = condition.message
        return hs
      end
    end
  end
end
hs.status = "Progressing"
hs.message = "Waiting for certificate"
return hs
"#;

    #[test]
    fn argo_cd_scripts_run_as_written() {
        let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "message": "issued"}]}});
        let h = health(CERT, &ready, false).unwrap();
        assert_eq!(
            (h.status.as_str(), h.message.as_deref()),
            ("Healthy", Some("issued"))
        );
        let bad = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "message": "bad key"}]}});
        assert_eq!(health(CERT, &bad, false).unwrap().status, "Degraded");
        // JSON null is nil, as in Argo CD.
        let pending = json!({"status": null});
        assert_eq!(health(CERT, &pending, false).unwrap().status, "Progressing");
        // string and math are there too.
        let h = health(
            "return {status = string.upper('healthy'):sub(1,1) .. 'ealthy', message = tostring(math.max(1, 2))}",
            &json!({}),
            false,
        )
        .unwrap();
        assert_eq!(
            (h.status.as_str(), h.message.as_deref()),
            ("Healthy", Some("2"))
        );
    }

    #[test]
    fn bad_results_and_runaway_scripts_are_errors_not_hangs() {
        let err = health("return nil", &json!({}), false).unwrap_err();
        assert_eq!(err, "expect table output from Lua script, not nil");
        let h = health("return {status = 'Fine'}", &json!({}), false).unwrap();
        assert_eq!(h.status, "Unknown");
        let started = Instant::now();
        let err = health("while true do end", &json!({}), false).unwrap_err();
        assert!(err.contains("exceeded"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let err = health(
            "local t = {} for i = 1, 1e9 do t[i] = i end return t",
            &json!({}),
            false,
        )
        .unwrap_err();
        assert!(err.contains("memory") || err.contains("exceeded"), "{err}");
        // No way out of the sandbox: files, commands, catching the deadline.
        for script in [
            "return io.open('/etc/passwd')",
            "return os.execute('true')",
            "return dofile('/etc/passwd')",
            "return require('io')",
            "return pcall(function() end)",
            "print('x') return {status = 'Healthy'}",
            "return {status = string.find(string.rep('a', 10000), string.rep('.-', 20) .. 'b') and 'Healthy' or 'Degraded'}",
        ] {
            assert!(health(script, &json!({}), false).is_err(), "{script}");
        }
    }
}
