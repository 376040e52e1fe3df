//! The command line as users meet it: every command's help ends with an
//! example, the shell completions load in their shell, the manual page is
//! roff, and a bad setting is one sentence naming what to do.

mod common;

use std::process::{Command, Output};

use common::bin;

fn flowgate(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("FLOWGATE_PROJECT")
        .output()
        .expect("flowgate runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "flowgate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_command_has_an_example_in_its_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["tui"],
        &["up"],
        &["scale"],
        &["down"],
        &["rebalance"],
        &["status"],
        &["logs"],
        &["proxy"],
        &["sim"],
        &["sim", "flow"],
        &["sim", "mc"],
        &["loadgen"],
        &["cert"],
        &["cert", "status"],
        &["cert", "renew"],
        &["doctor"],
        &["export"],
        &["completions"],
        &["man"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let help = stdout(&flowgate(&args));
        assert!(
            help.contains("Example:\n  flowgate") || help.contains("Examples:\n  flowgate"),
            "`flowgate {}` has no example:\n{help}",
            command.join(" ")
        );
    }
}

#[test]
fn completions_load_in_bash_and_name_the_commands() {
    let script = stdout(&flowgate(&["completions", "bash"]));
    for word in ["doctor", "export", "loadgen", "--max-connections-per-ip"] {
        assert!(script.contains(word), "{word} missing from the bash completion");
    }
    // bash parses it and defines the completion function.
    let check = Command::new("bash")
        .args(["-c", "source /dev/stdin && declare -F _flowgate"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(script.as_bytes())?;
            child.wait_with_output()
        })
        .expect("bash runs");
    assert!(
        check.status.success() && String::from_utf8_lossy(&check.stdout).contains("_flowgate"),
        "bash did not load the completion: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&flowgate(&["completions", shell]));
        assert!(script.contains("doctor"), "{shell}: {script}");
    }
    let refused = flowgate(&["completions", "tcsh"]);
    assert!(!refused.status.success());
}

#[test]
fn the_manual_page_is_roff_and_lists_the_commands() {
    let page = stdout(&flowgate(&["man"]));
    assert!(page.contains(".TH flowgate 1"), "{page}");
    for command in ["doctor", "export", "proxy", "completions"] {
        assert!(page.contains(command), "{command} missing from the manual");
    }
}

#[test]
fn a_bad_setting_is_one_sentence() {
    let dir = std::env::temp_dir().join(format!("flowgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("flowgate.toml"),
        "domain = \"flow.example.com\"\nmc_domain = \"flow.example.com\"\n",
    )
    .unwrap();
    // The same rule as the setup form's: MC needs a name of its own.
    let out = Command::new(bin())
        .args(["export", "compose", "--demo"])
        .current_dir(&dir)
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Management Center needs a host name of its own"),
        "{stderr}"
    );
    assert_eq!(
        stderr.trim().lines().filter(|l| l.starts_with("flowgate:")).count(),
        1,
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_ssh_docker_host_that_ssh_would_read_as_an_option_runs_nothing() {
    let dir = std::env::temp_dir().join(format!("flowgate-ssh-option-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let witness = dir.join("ran");
    // A stand-in for ssh that would leave a trace if it were ever started.
    let fake_ssh = dir.join("ssh");
    std::fs::write(&fake_ssh, format!("#!/bin/sh\ntouch {}\n", witness.display())).unwrap();
    std::fs::set_permissions(&fake_ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for hostile in [
        format!("ssh://-oProxyCommand=touch${{IFS}}{}", witness.display()),
        "ssh://user@-oProxyCommand=x".to_string(),
        "ssh://user@host/var/run/docker.sock".to_string(),
    ] {
        let out = Command::new(bin())
            .args(["status", "--project", "sshoption"])
            .env("DOCKER_HOST", &hostile)
            .env("FLOWGATE_SSH_COMMAND", fake_ssh.to_str().unwrap())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && said.contains("cannot reach Docker at ssh://") && said.contains("ssh://"),
            "{hostile}: {said}"
        );
        assert_eq!(said.trim().lines().count(), 1, "one sentence: {said}");
    }
    assert!(!witness.exists(), "ssh was started for a hostile DOCKER_HOST");
    let _ = std::fs::remove_dir_all(&dir);
}
