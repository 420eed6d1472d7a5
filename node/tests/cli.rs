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

    // A relay limit of zero (a circuit ended at once, or none allowed) is refused.
    for flag in [
        "--relay-max-circuit-secs",
        "--relay-max-circuit-bytes",
        "--relay-max-circuits",
        "--relay-max-reservations",
    ] {
        let out = Command::new(BIN).args([flag, "0"]).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{flag} 0");
        assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value '0'"), "{flag} 0");
    }
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
        "--relay-max-circuits",
        "--relay-max-reservations",
        "--json",
        "--version",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

fn node(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.args(args).args(["--data-dir", dir.to_str().expect("utf-8")]);
    output_with_input(command, stdin.unwrap_or_default())
}

/// Run `command` with `stdin` as its input; its status and output.
fn output_with_input(mut command: Command, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    // (A command that fails stops reading its input: what it did is in its output.)
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("wait")
}

#[test]
fn add_cat_pin_gc_round_trip_and_corruption_is_caught() {
    let dir = temp_dir("cas");
    let content: Vec<u8> =
        (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let out = node(&dir, &["add", "--json", "--chunk-size", "65536"], Some(&content));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let added: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let cid = added["cid"].as_str().expect("cid").to_owned();
    let sha = added["sha256"].as_str().expect("sha256").to_owned();
    assert_eq!(added["size"], 3_000_000);

    for name in [&cid, &sha] {
        let out = node(&dir, &["cat", name], None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout == content, "cat {name} returns the same bytes");
    }

    let ls = String::from_utf8(node(&dir, &["ls"], None).stdout).expect("utf-8");
    assert!(ls.contains(&cid) && ls.contains("pinned"), "{ls}");
    // Adding the same content again without a pin keeps the pin it has.
    let out = node(&dir, &["add", "--no-pin", "--chunk-size", "65536"], Some(&content));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ls = String::from_utf8(node(&dir, &["ls"], None).stdout).expect("utf-8");
    assert!(ls.contains(&format!("{cid} {sha} 3000000 pinned")), "{ls}");
    let gc = String::from_utf8(node(&dir, &["gc"], None).stdout).expect("utf-8");
    assert_eq!(gc.trim(), "removed 0 objects, 0 blocks", "a pinned object keeps its blocks");

    // Flip bytes of one stored leaf: reading must fail, not return altered content.
    let leaf = std::fs::read_dir(dir.join("blocks"))
        .expect("blocks")
        .flat_map(|shard| std::fs::read_dir(shard.expect("shard").path()).expect("shard dir"))
        .map(|e| e.expect("entry").path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("bafkrei")))
        .expect("a raw leaf");
    let mut bytes = std::fs::read(&leaf).expect("read leaf");
    bytes[0] ^= 0xff;
    std::fs::write(&leaf, &bytes).expect("corrupt");
    let out = node(&dir, &["cat", &cid], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match its cid"));
    assert!(
        out.stdout.len() < content.len() && content.starts_with(&out.stdout),
        "only verified bytes"
    );
    // Adding the same content again repairs it.
    let out = node(&dir, &["add", "--chunk-size", "65536"], Some(&content));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = node(&dir, &["cat", &cid], None);
    assert!(out.status.success() && out.stdout == content, "repaired by adding it again");

    // What an interrupted write left is removed by gc, unless its writer still runs.
    let shard = leaf.parent().expect("shard");
    let gone = shard.join("bafkreileftover.tmp4000000000");
    let running = shard.join(format!("bafkreiwriting.tmp{}", std::process::id()));
    for f in [&gone, &running] {
        std::fs::write(f, b"half a block").expect("plant");
    }
    assert!(node(&dir, &["gc"], None).status.success());
    assert!(!gone.exists(), "a dead writer's leftover is removed");
    assert!(running.exists(), "a running writer's file is left alone");
    std::fs::remove_file(&running).expect("clean up");

    // A reader that goes (`ls | head -1`) ends the command quietly.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(BIN)
        .args(["ls", "--data-dir", dir.to_str().expect("utf-8")])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("panicked"), "{:?} {stderr}", out.status);

    let out = node(&dir, &["unpin", &cid], None);
    assert!(out.status.success());
    let gc = String::from_utf8(node(&dir, &["gc"], None).stdout).expect("utf-8");
    assert!(gc.starts_with("removed 1 objects, ") && !gc.trim().ends_with(" 0 blocks"), "{gc}");
    let out = node(&dir, &["cat", &sha], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no object named"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn add_rejects_bad_settings_and_missing_files() {
    let dir = temp_dir("cas-bad");
    let out = node(&dir, &["add", "--chunk-size", "0"], Some(b"x"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chunk size must be between"));
    let out = node(&dir, &["add", "--preset", "ipfs"], Some(b"x"));
    assert_eq!(out.status.code(), Some(2));
    let out = node(&dir, &["add", "/nonexistent/file"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/file"));
    let out = node(&dir, &["cat", "bafy-not-a-cid"], None);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
    // Reading a data directory that is not there (a mistyped path) says so, and makes none.
    let missing = temp_dir("cas-missing");
    let out = node(&missing, &["ls"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no data directory"));
    assert!(!missing.exists(), "a read makes no directory");
    // An entry to verify is read no further than the largest one could be.
    let out = node(&missing, &["verify", "/dev/zero"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the entry is larger than"));
}

#[test]
fn one_node_per_data_dir_and_no_gc_while_content_is_added() {
    let dir = temp_dir("locks");
    // A node runs on the directory: a second one is refused, saying why.
    let child = Command::new(BIN)
        .args(["--data-dir", dir.to_str().expect("utf-8 path"), "--json"])
        .args(["--ws-port", "0", "--webrtc-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn disot-node");
    let mut first = Running(child);
    let stdout = first.0.stdout.take().expect("stdout");
    let started = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("\"listening\""));
    assert!(started, "the first node listens");
    let second = Command::new(BIN)
        .args(["--data-dir", dir.to_str().expect("utf-8 path")])
        .args(["--ws-port", "0", "--webrtc-port", "0"])
        .output()
        .expect("run");
    assert_eq!(second.status.code(), Some(2));
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("another disot-node runs on the data directory"), "{said}");
    // Content can be added and read while the node runs; gc is refused while an add holds the
    // store (held here as an add would), and runs once it is done.
    assert!(node(&dir, &["add"], Some(b"while the node runs")).status.success());
    drop(first);
    let store_lock = std::fs::File::open(dir.join("store.lock")).expect("store.lock");
    store_lock.try_lock_shared().expect("held as an add holds it");
    let out = node(&dir, &["gc"], None);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("content is being added, pinned or unpinned"), "{said}");
    assert!(node(&dir, &["add"], Some(b"another add at the same time")).status.success());
    store_lock.unlock().expect("unlock");
    assert!(node(&dir, &["gc"], None).status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A shell's mount namespace of its own with a small tmpfs mounted on `dir` (a full disk for
/// the commands run in it, see [`in_namespace`]); the namespace goes when the shell is killed.
fn small_disk(dir: &Path, size: &str) -> Running {
    std::fs::create_dir_all(dir).expect("mount point");
    let mut child = Command::new("unshare")
        // (--kill-child: the shell holding the namespace goes with unshare, whatever ends it.)
        .args(["--fork", "--kill-child", "-m", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size="$1" tmpfs "$0" && echo mounted && exec sleep 600"#)
        .arg(dir)
        .arg(size)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    let mut running = Running(child);
    if line.trim() != "mounted" {
        let mut why = String::new();
        if let Some(mut e) = running.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut why);
        }
        panic!("a small disk of {size} could not be mounted (needs unshare and mount): {why}");
    }
    running
}

/// Run `program` with `args` in the mount namespace of `disk`.
fn in_namespace(
    disk: &Running,
    program: &str,
    args: &[&str],
    stdin: &[u8],
) -> std::process::Output {
    let mut command = Command::new("nsenter");
    command.args(["-t", &disk.0.id().to_string(), "-m", "--", program]).args(args);
    output_with_input(command, stdin)
}

#[test]
fn a_full_disk_refuses_an_add_clearly_and_gc_still_frees_space() {
    let dir = temp_dir("full");
    let disk = small_disk(&dir, "8m");
    let d = dir.to_str().expect("utf-8");
    let run = |args: &[&str], stdin: &[u8]| {
        let mut all = vec!["--data-dir", d];
        all.extend_from_slice(args);
        in_namespace(&disk, BIN, &all, stdin)
    };
    // (Bytes that repeat nowhere: no block of one is a block of another.)
    let bytes = |n: usize, seed: u64| -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    };
    let added = |out: &std::process::Output| -> String {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v["cid"].as_str().expect("cid").to_owned()
    };
    // 2 MiB pinned and 4 MiB unpinned fill 6 of the 8 MiB; 4 MiB more do not fit.
    let (a, b, c) = (bytes(2 << 20, 1), bytes(4 << 20, 2), bytes(4 << 20, 3));
    let cid_a = added(&run(&["add", "--json"], &a));
    let cid_b = added(&run(&["add", "--json", "--no-pin"], &b));
    let refused = run(&["add", "--json"], &c);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "4 MiB more fit on an 8 MiB disk holding 6");
    assert!(said.contains("storage quota exceeded"), "a clear error: {said}");
    // Nothing of the refused object is visible, and what was there reads back.
    let ls = String::from_utf8(run(&["ls"], b"").stdout).expect("utf-8");
    assert_eq!(ls.lines().count(), 2, "{ls}");
    assert!(ls.contains(&cid_a) && ls.contains(&cid_b), "{ls}");
    assert!(run(&["cat", &cid_a], b"").stdout == a, "A reads back");

    // The disk filled to the last byte: gc, the one command that frees space, still runs.
    let filler = format!("{d}/filler");
    let fill = in_namespace(
        &disk,
        "sh",
        &["-c", r#"cat /dev/zero > "$0"; head -c 1 /dev/zero > "$0.more""#, &filler],
        b"",
    );
    assert!(!fill.status.success(), "the disk is full: {}", String::from_utf8_lossy(&fill.stderr));
    // (Blocks are files: A's are its two leaves and its root; B's five; the refused add left
    // some of its own.)
    let blocks = || {
        let out = in_namespace(&disk, "find", &[&format!("{d}/blocks"), "-type", "f"], b"");
        String::from_utf8_lossy(&out.stdout).lines().count() as u64
    };
    let before = blocks();
    assert!(before > 3 + 5, "the refused add left blocks: {before}");
    let gc = run(&["gc", "--json"], b"");
    assert!(gc.status.success(), "gc on a full disk: {}", String::from_utf8_lossy(&gc.stderr));
    let gc: serde_json::Value = serde_json::from_slice(&gc.stdout).expect("json");
    assert_eq!(gc["removedObjects"], 1, "the unpinned object went: {gc}");
    assert_eq!(gc["removedBlocks"], before - 3, "all but A's: {gc}");
    assert_eq!(blocks(), 3, "A's blocks stay");
    let ls = String::from_utf8(run(&["ls"], b"").stdout).expect("utf-8");
    assert_eq!(ls.lines().count(), 1, "{ls}");
    assert!(ls.contains(&cid_a), "{ls}");

    // With the filler gone, what did not fit before fits now.
    assert!(in_namespace(&disk, "rm", &[&filler], b"").status.success());
    let cid_c = added(&run(&["add", "--json"], &c));
    assert!(run(&["cat", &cid_c], b"").stdout == c, "C reads back");
    assert!(run(&["cat", &cid_a], b"").stdout == a, "A reads back");
    drop(disk);
    let _ = std::fs::remove_dir_all(&dir);
}
