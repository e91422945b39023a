//! `popbridge plan` against a real Dovecot: it says what a run will do, changes nothing, and the
//! run that follows does exactly that.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{assert_exactly_once, mail, Bridge, Mailbox};

fn plan(bridge: &Bridge) -> serde_json::Value {
    let run = bridge.run(&["plan", "--json"]);
    assert!(run.ok(), "{}", run.output());
    let all: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    all[0].clone()
}

fn uidls_with(p: &serde_json::Value, action: &str) -> Vec<String> {
    let mut v: Vec<String> = p["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == action)
        .map(|s| s["uidl"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn plan_changes_nothing_and_the_next_run_does_what_it_said() {
    let dc = dovecot_or_skip!();
    let user = dc.add_user("plan");
    let old = mail::corpus("plan-old", 3);
    dc.seed(&user, &old);
    let bridge = Bridge::new(dc, &[Mailbox::new("plan", &user)]);
    // Before any run: everything would be fetched; nothing is.
    let first = plan(&bridge);
    assert_eq!(uidls_with(&first, "fetch").len(), 3, "{first:#}");
    assert!(bridge.delivered("plan").is_empty());
    assert_eq!(dc.list_server_messages(&user).len(), 3);
    assert!(
        dc.log()
            .lines()
            .filter(|l| l.contains("pop3(plan"))
            .all(|l| l.contains("retr=0/0")),
        "plan retrieved something:\n{}",
        dc.log()
    );

    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    // From now on delivered mail leaves the server.
    let yaml = std::fs::read_to_string(&bridge.config).unwrap();
    std::fs::write(
        &bridge.config,
        yaml.replace("delete: never", "delete: after_delivery"),
    )
    .unwrap();
    let new = mail::corpus("plan-new", 2);
    dc.seed(&user, &new);
    let counts = || {
        let run = bridge.run(&["state", "show", "--json"]);
        assert!(run.ok(), "{}", run.output());
        run.stdout
    };
    let state_before = counts();
    let p = plan(&bridge);
    let to_fetch = uidls_with(&p, "fetch");
    let to_delete = uidls_with(&p, "delete");
    assert_eq!((to_fetch.len(), to_delete.len()), (2, 3), "{p:#}");
    assert_eq!(counts(), state_before, "plan wrote to the state");
    assert_eq!(
        dc.list_server_messages(&user).len(),
        5,
        "plan deleted something"
    );

    // The run agrees: it fetches the two, deletes the three (and the two once delivered).
    let run = bridge.once();
    assert!(run.ok(), "{}", run.output());
    let all: Vec<Vec<u8>> = old.iter().chain(&new).cloned().collect();
    assert_exactly_once(&all, &bridge.delivered("plan"));
    let after = plan(&bridge);
    assert!(after["steps"].as_array().unwrap().is_empty(), "{after:#}");
}
