//! Crash consistency: a writer process is `kill -9`ed at random moments;
//! the recording must reopen, verify, and hold every event whose commit the
//! writer had reported.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use diffkeeper_store::{Moment, Recording};
use rand::Rng;
use support::*;

const CHILD_ENV: &str = "DIFFKEEPER_CRASH_CHILD_FILE";

/// Content of event `i`: varied sizes so every encoding is exercised.
fn content(i: u64) -> Vec<u8> {
    let len = match i % 5 {
        0 => 10,
        1 => 3_000,
        2 => 70_000,
        3 => 0,
        _ => 200,
    };
    (0..len).map(|j| ((i * 31 + j) % 251) as u8).collect()
}

fn path_of(i: u64) -> String {
    format!("/data/f{}", i % 7)
}

/// The writer: runs only when spawned by the test below.
#[test]
fn crash_writer_child() {
    let Some(file) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut rec = recorder(std::path::Path::new(&file));
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        write(&mut rec, i, &path_of(i), &content(i));
        if i % 5 == 4 {
            rec.flush().unwrap();
            writeln!(out, "committed {i}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn kill_9_loses_nothing_committed() {
    let mut rng = rand::rng();
    for round in 0..6 {
        let (_dir, file) = temp_recording();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("committed ") {
                    last = Some(n.parse::<u64>().unwrap());
                }
            }
            last
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(150..900)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let last_committed = reader.join().unwrap();

        let recording = Recording::open(&file)
            .unwrap_or_else(|e| panic!("round {round}: reopening after kill -9: {e}"));
        let report = recording.verify().unwrap();
        assert!(report.is_ok(), "round {round}: {:?}", report.problems);
        let count = recording.event_count().unwrap();
        let Some(last) = last_committed else {
            // Killed before the first reported commit: still a valid file.
            continue;
        };
        assert!(
            count > last,
            "round {round}: {count} events, but #{last} was committed"
        );
        // Every event present is intact, and the final state is the model's.
        for (i, event) in recording.events().unwrap().enumerate() {
            let event = event.unwrap();
            let stored = event.op.content().unwrap();
            assert_eq!(recording.read_content(stored).unwrap(), content(i as u64));
        }
        let state = recording.state_at(&Moment::latest()).unwrap().state;
        assert_eq!(state.len(), (count as usize).min(7));
        eprintln!("round {round}: killed after #{last} committed; {count} events recovered");
    }
}
