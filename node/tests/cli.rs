//! The `disot-node` binary as a user runs it: flags, data directory errors, and addresses that
//! stay the same across restarts.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_disot-node");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("disot-node-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Kills the child (by its own handle) when dropped, so a failing test leaves no process.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the node on fixed ports and collect the addresses it prints.
fn listen_addrs(data_dir: &Path, ws_port: u16, rtc_port: u16) -> Vec<String> {
    let child = Command::new(BIN)
        .args(["--data-dir", data_dir.to_str().expect("utf-8 path"), "--json"])
        .args(["--ws-port", &ws_port.to_string(), "--webrtc-port", &rtc_port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn disot-node");
    let mut running = Running(child);
    let stdout = running.0.stdout.take().expect("stdout");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut addrs = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read line");
        let event: serde_json::Value = serde_json::from_str(&line).expect("json event");
        if event["event"] == "listening" {
            addrs.push(event["addr"].as_str().expect("addr").to_owned());
        }
        if addrs.len() == 2 || Instant::now() > deadline {
            break;
        }
    }
    addrs.sort();
    addrs
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[test]
fn addresses_with_peer_id_and_certhash_survive_a_restart() {
    let dir = temp_dir("restart");
    let (ws, rtc) = (free_port(), free_udp_port());
    let first = listen_addrs(&dir, ws, rtc);
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().any(|a| a.contains("/ws/p2p/12D3Koo")), "{first:?}");
    assert!(first.iter().any(|a| a.contains("/webrtc-direct/certhash/")), "{first:?}");
    let second = listen_addrs(&dir, ws, rtc);
    assert_eq!(first, second);
    let other = listen_addrs(&temp_dir("other"), free_port(), free_udp_port());
    assert_ne!(
        first[0].rsplit('/').next(),
        other[0].rsplit('/').next(),
        "a new data dir, a new id"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(temp_dir("other"));
}

#[test]
fn bad_flags_get_a_clear_error() {
    let out = Command::new(BIN).arg("--no-such-flag").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unexpected argument '--no-such-flag'"), "{err}");

    let out = Command::new(BIN).args(["--ws-port", "seventy"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'seventy'"));
}

#[test]
fn an_unusable_data_dir_gets_a_clear_error() {
    let file = temp_dir("file");
    std::fs::write(&file, b"not a directory").expect("write");
    let out = Command::new(BIN)
        .args(["--data-dir", file.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a directory"), "{err}");
    let _ = std::fs::remove_file(&file);

    let dir = temp_dir("damaged");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("identity.key"), b"garbage").expect("write");
    let out =
        Command::new(BIN).args(["--data-dir", dir.to_str().expect("utf-8")]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("identity.key is damaged"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_documents_every_flag() {
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--data-dir",
        "--listen-ip",
        "--ws-port",
        "--webrtc-port",
        "--no-webrtc",
        "--external-addr",
        "--json",
        "--version",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}
