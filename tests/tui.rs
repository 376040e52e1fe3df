//! The dashboard end to end: `flowgate tui --demo` in tmux on the real
//! Docker engine. It shows the instances, `+` adds a healthy one on screen
//! and in Docker, `q` leaves with the containers still running. The project
//! is taken down when the test ends, passed or failed.

mod common;

use std::process::Command;
use std::time::Duration;

use common::docker::*;
use common::tmux::Tmux;
use common::*;

fn running_containers(project: &str) -> Vec<String> {
    let out = run(Command::new("docker").args([
        "ps",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=io.flowgate.project={project}"),
    ]));
    let mut names: Vec<String> = out.lines().map(str::to_string).collect();
    names.sort();
    names
}

#[test]
fn docker_tui_demo_shows_instances_scales_with_plus_and_quits_leaving_them_running() {
    let (_fx, project) = project_for("tui");
    let (http, https) = (free_port(), free_port());
    let command = format!(
        "env XDG_STATE_HOME={state} NO_COLOR=1 {BIN} tui --demo --project {name} --instances 2 \
         --http-port {http} --https-port {https}; echo EXITED $?; sleep 600",
        state = project.state.display(),
        name = project.name,
    );
    let tmux = Tmux::start(&command, 120, 36);

    // The dashboard creates the deployment and shows both instances healthy.
    let screen = tmux.wait_for("2 healthy instances", Duration::from_secs(120), |s| {
        s.contains("2/2 healthy") && s.contains(&format!("{}-flow-2", project.name))
    });
    assert!(screen.contains(&format!("https://flow.localhost:{https}/")), "{screen}");

    // `+` adds a third, healthy on screen and running in Docker.
    tmux.keys("+");
    tmux.wait_for("3 healthy instances", Duration::from_secs(60), |s| {
        s.contains("3/3 healthy") && s.contains(&format!("{}-flow-3", project.name))
    });
    let flow3 = format!("{}-flow-3", project.name);
    assert!(running_containers(&project.name).contains(&flow3));

    // The help overlay opens and closes.
    tmux.keys("?");
    tmux.wait_for("the help overlay", Duration::from_secs(5), |s| {
        s.contains("quit and take the deployment down")
    });
    tmux.keys("Escape");
    tmux.wait_for("the help to close", Duration::from_secs(5), |s| {
        !s.contains("quit and take the deployment down")
    });

    // `D` runs the doctor on the deployment: every rule of the guide holds.
    tmux.keys("D");
    let screen = tmux.wait_for("the doctor's verdict", Duration::from_secs(60), |s| {
        s.contains("every rule holds") || s.contains("broken") || s.contains("could not run")
    });
    assert!(screen.contains("every rule holds"), "{screen}");
    assert!(screen.contains("PASS  idle-timeout"), "{screen}");
    tmux.keys("Escape");

    // `q` quits; the deployment keeps running.
    tmux.keys("q");
    let screen = tmux.wait_for("flowgate to exit", Duration::from_secs(10), |s| s.contains("EXITED"));
    assert!(screen.contains("EXITED 0"), "{screen}");
    assert!(screen.contains("keeps running"), "{screen}");
    let names = running_containers(&project.name);
    assert_eq!(names.len(), 5, "proxy, MC and 3 instances: {names:?}");
    let status = project.status();
    let healthy = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["health"] == "healthy")
        .count();
    assert_eq!(healthy, 3, "{status}");
}
