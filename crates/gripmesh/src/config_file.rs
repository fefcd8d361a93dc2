//! `--config FILE`: a TOML file whose keys are the subcommand's long flag names
//! (`listen = "0.0.0.0:7999"`, `sig-key = "..."`, `publish-insecure = true`).
//!
//! Precedence: command-line flag > `GRIPMESH_*` environment variable > config file > default.
//! The file's values are turned into flags placed before the user's own, so clap validates them
//! exactly like flags (and names the bad value). Unknown keys are an error.

use clap::CommandFactory;
use std::ffi::OsString;

/// The command line with the config file's settings merged in.
pub(crate) fn merged_args(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let strs: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(sub_pos) = strs
        .iter()
        .skip(1)
        .position(|a| !a.starts_with('-'))
        .map(|p| p + 1)
    else {
        return Ok(args);
    };
    let config_path =
        find_flag(&strs[sub_pos + 1..], "config").or_else(|| std::env::var("GRIPMESH_CONFIG").ok());
    let Some(path) = config_path else {
        return Ok(args);
    };
    let cmd = crate::cli::Cli::command();
    let Some(sub) = cmd.find_subcommand(&strs[sub_pos]) else {
        return Ok(args);
    };
    // Client subcommands (`publish`, `routes`, `status`) take no config file.
    if !sub.get_arguments().any(|a| a.get_long() == Some("config")) {
        return Ok(args);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("--config {path}: {e}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("--config {path}: {}", one_line(&e.to_string())))?;
    let mut extra: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        let Some(arg) = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
        else {
            return Err(format!("--config {path}: unknown key '{key}'"));
        };
        let env_set = arg.get_env().is_some_and(|e| std::env::var_os(e).is_some());
        if env_set || find_flag(&strs[sub_pos + 1..], key).is_some() || has_flag(&strs, key) {
            continue;
        }
        let takes_value = arg.get_action().takes_values();
        match value {
            toml::Value::Boolean(b) if !takes_value => {
                if *b {
                    extra.push(format!("--{key}").into());
                }
            }
            toml::Value::String(s) if takes_value => extra.push(format!("--{key}={s}").into()),
            toml::Value::Integer(i) if takes_value => extra.push(format!("--{key}={i}").into()),
            toml::Value::Float(f) if takes_value => extra.push(format!("--{key}={f}").into()),
            other => {
                return Err(format!(
                    "--config {path}: key '{key}' has a value of the wrong type ({})",
                    other.type_str()
                ));
            }
        }
    }
    let mut out = args;
    let tail = out.split_off(sub_pos + 1);
    out.extend(extra);
    out.extend(tail);
    Ok(out)
}

/// Value of `--name VALUE` or `--name=VALUE` in `args`.
fn find_flag(args: &[String], name: &str) -> Option<String> {
    let long = format!("--{name}");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == long {
            return it.next().cloned();
        }
        if let Some(v) = a.strip_prefix(&long).and_then(|r| r.strip_prefix('=')) {
            return Some(v.to_owned());
        }
    }
    None
}

/// True when a boolean `--name` is present.
fn has_flag(args: &[String], name: &str) -> bool {
    let long = format!("--{name}");
    args.contains(&long)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn merges_keys_before_user_flags_and_rejects_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("gm-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "sig-iss = \"me\"\npublish-insecure = true\ndrain-timeout = 3\n",
        )
        .expect("write");
        let f = file.to_string_lossy().to_string();
        let out = merged_args(os(&[
            "gm",
            "standalone",
            "--config",
            &f,
            "--drain-timeout",
            "9",
        ]))
        .expect("merge");
        let out: Vec<String> = out
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert!(out.contains(&"--sig-iss=me".to_owned()));
        assert!(out.contains(&"--publish-insecure".to_owned()));
        assert!(
            !out.iter().any(|a| a == "--drain-timeout=3"),
            "flag wins: {out:?}"
        );
        std::fs::write(&file, "bogus = 1\n").expect("write");
        let err = merged_args(os(&["gm", "standalone", "--config", &f])).expect_err("unknown");
        assert!(err.contains("unknown key 'bogus'"), "{err}");
        std::fs::write(&file, "listen = [1]\n").expect("write");
        assert!(merged_args(os(&["gm", "standalone", "--config", &f])).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
