//! dist/macos: the LaunchDaemon plists parse and say what the docs promise.
#![allow(clippy::unwrap_used)]

use plist::Value;

fn load(name: &str) -> plist::Dictionary {
    let path = format!("{}/../../dist/macos/{name}", env!("CARGO_MANIFEST_DIR"));
    Value::from_file(&path).unwrap().into_dictionary().unwrap()
}

fn string<'a>(d: &'a plist::Dictionary, k: &str) -> &'a str {
    d.get(k)
        .and_then(Value::as_string)
        .unwrap_or_else(|| panic!("{k} missing"))
}

#[test]
fn the_helper_runs_as_root_with_a_private_umask() {
    let d = load("org.keyward.helper.plist");
    assert_eq!(string(&d, "Label"), "org.keyward.helper");
    assert_eq!(string(&d, "UserName"), "root");
    assert_eq!(
        d.get("Umask").and_then(Value::as_unsigned_integer),
        Some(0o077)
    );
    let args: Vec<&str> = d
        .get("ProgramArguments")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .filter_map(Value::as_string)
        .collect();
    assert_eq!(
        args,
        [
            "/usr/local/libexec/keyward/keyward-helper",
            "--config",
            "/etc/keyward/keyward.toml"
        ]
    );
    assert_eq!(d.get("KeepAlive").and_then(Value::as_boolean), Some(true));
}

#[test]
fn the_agent_runs_as_keyward_without_the_admin_group() {
    let d = load("org.keyward.agent.plist");
    assert_eq!(string(&d, "Label"), "org.keyward.agent");
    assert_eq!(string(&d, "UserName"), "_keyward");
    assert_eq!(string(&d, "GroupName"), "_keyward");
    assert_eq!(d.get("InitGroups").and_then(Value::as_boolean), Some(false));
    assert_eq!(
        d.get("Umask").and_then(Value::as_unsigned_integer),
        Some(0o077)
    );
    let args = d.get("ProgramArguments").and_then(Value::as_array).unwrap();
    assert_eq!(
        args[0].as_string(),
        Some("/usr/local/libexec/keyward/keywardd")
    );
    assert!(
        !d.contains_key("EnvironmentVariables"),
        "the agent gets launchd's default environment"
    );
}

#[test]
fn the_readme_lists_every_path_the_plists_use() {
    let readme = std::fs::read_to_string(format!(
        "{}/../../dist/macos/README.md",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    for name in ["org.keyward.helper.plist", "org.keyward.agent.plist"] {
        let d = load(name);
        let args = d.get("ProgramArguments").and_then(Value::as_array).unwrap();
        for a in args
            .iter()
            .filter_map(Value::as_string)
            .filter(|a| a.starts_with('/'))
        {
            assert!(readme.contains(a), "{a} not in the layout table");
        }
        assert!(readme.contains(name));
    }
}
