//! The embedded default: `jobwire serve` without `--redis-url` starts and supervises its own
//! redis-server in `--data-dir`. Real `jobwire` processes throughout; they are started, stopped
//! and killed, so these tests run one at a time (nextest group `processes`). The launcher under
//! it (`jobwire::redis_server`) is tested here too, with the options the default does not use.

use std::{path::Path, time::Duration};

use jobwire::{
    proto::JobState,
    redis_server::{MaxMemory, RedisConfig, RedisServer, RedisServerError, TlsFiles},
};

use crate::harness::{
    Process, Redis, Worker, add, assert_invariants_at, children_of, info, is_running, job, pid_t, run_jobwire,
    wait_until,
};

/// The key prefix a server uses when none is given.
const PREFIX: &str = "jw";

fn serve(dir: &Path) -> Process {
    Process::start(&["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.to_str().expect("utf-8 path")])
}

fn url(dir: &Path) -> String {
    let dir = dir.canonicalize().expect("data dir");
    format!("unix://{}", dir.join("redis.sock").display())
}

/// The redis-server child of a jobwire process.
fn embedded_redis(jobwire: &Process) -> u32 {
    let children = children_of(jobwire.pid());
    let redis: Vec<u32> =
        children.iter().filter(|(_, cmdline)| cmdline.contains("redis-server")).map(|(pid, _)| *pid).collect();
    assert_eq!(redis.len(), 1, "one redis-server child expected: {children:?}");
    redis[0]
}

fn answers(url: &str) -> bool {
    redis::Client::open(url)
        .ok()
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)).ok())
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
        .is_some()
}

async fn sigterm(mut jobwire: Process) {
    let status = jobwire.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "jobwire exited with {status:?}");
}

/// The threads of a server started with `args` (and `env`), as its "jobwire listening" line
/// says.
async fn threads_of(args: &[&str], env: &[(&str, &str)]) -> usize {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jobwire"));
    cmd.args(args).env_remove("TOKIO_WORKER_THREADS").env_remove("JOBWIRE_THREADS").envs(env.iter().copied());
    let jobwire = Process::start_logging(&mut cmd, std::fs::File::create(&log).expect("log file"));
    sigterm(jobwire).await;
    let text = std::fs::read_to_string(&log).expect("the log");
    let line = text.lines().find(|l| l.contains("jobwire listening")).expect("a listening line");
    let threads = line.split_whitespace().find_map(|field| field.strip_prefix("threads="));
    threads.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no thread count in {line:?}"))
}

#[tokio::test]
async fn the_server_leaves_a_core_to_the_redis_it_starts_unless_told_otherwise() {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path");
    let serve = ["serve", "--listen", "127.0.0.1:0", "--data-dir", data];
    assert_eq!(threads_of(&serve, &[]).await, cores.saturating_sub(1).max(1), "one per core but one, at least one");
    assert_eq!(threads_of(&[&serve[..], &["--threads", "3"]].concat(), &[]).await, 3);
    assert_eq!(threads_of(&serve, &[("JOBWIRE_THREADS", "2")]).await, 2);
    // The setting the README used to give still holds in place of the default.
    assert_eq!(threads_of(&serve, &[("TOKIO_WORKER_THREADS", "3")]).await, 3);
    // Beside a Redis of the user's, tokio's own choice: one per core.
    let redis = Redis::start();
    let url = redis.url();
    assert_eq!(threads_of(&["serve", "--listen", "127.0.0.1:0", "--redis-url", &url], &[]).await, cores);
}

#[tokio::test]
async fn serve_without_a_redis_url_runs_a_private_redis_in_the_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let jobwire = serve(dir.path());
    assert!(dir.path().join("redis.sock").exists(), "the socket is in the data dir");
    assert!(dir.path().join("jobwire.lock").exists());
    let redis_pid = embedded_redis(&jobwire);

    let mut client = jobwire.client().await;
    let id = add(&mut client, job("q", "t", b"hello")).await;
    let mut worker = Worker::open_at(jobwire.addr, &["q"], 1).await;
    let delivered = worker.job().await;
    assert_eq!((delivered.id.as_str(), delivered.payload.as_slice()), (id.as_str(), b"hello".as_slice()));
    worker.complete(&delivered, b"world").await.expect("complete");
    let done = info(&mut client, &id).await;
    assert_eq!((done.state(), done.result.as_slice()), (JobState::Completed, b"world".as_slice()));
    assert_invariants_at(&url(dir.path()), PREFIX, "q").await;

    drop(worker);
    sigterm(jobwire).await;
    assert!(!is_running(redis_pid), "a clean stop stops the redis-server too");
}

#[tokio::test]
async fn jobs_survive_a_restart_on_the_same_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = serve(dir.path());
    let id = add(&mut first.client().await, job("q", "t", b"keep me")).await;
    sigterm(first).await;

    let second = serve(dir.path());
    let mut client = second.client().await;
    let kept = info(&mut client, &id).await;
    assert_eq!((kept.state(), kept.payload.as_slice()), (JobState::Waiting, b"keep me".as_slice()));
    let mut worker = Worker::open_at(second.addr, &["q"], 1).await;
    let delivered = worker.job().await;
    assert_eq!(delivered.id, id);
    worker.complete(&delivered, b"").await.expect("complete");
    assert_invariants_at(&url(dir.path()), PREFIX, "q").await;
}

#[tokio::test]
async fn a_second_jobwire_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = serve(dir.path());
    let path = dir.path().to_str().expect("utf-8 path");
    let second = run_jobwire(&["serve", "--listen", "127.0.0.1:0", "--data-dir", path], Duration::from_secs(20)).await;
    assert_ne!(second.code, Some(0), "refused: {}", second.stderr);
    let canonical = dir.path().canonicalize().expect("dir");
    assert!(
        second.stderr.contains("in use") && second.stderr.contains(canonical.to_str().expect("utf-8")),
        "the message names the directory in use: {}",
        second.stderr
    );
    // The first one is untouched.
    let mut client = first.client().await;
    let id = add(&mut client, job("q", "t", b"")).await;
    assert_eq!(info(&mut client, &id).await.state(), JobState::Waiting);
    assert_invariants_at(&url(dir.path()), PREFIX, "q").await;
}

#[tokio::test]
async fn without_redis_server_on_path_it_says_how_to_get_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("bin");
    std::fs::create_dir(&empty).expect("mkdir");
    let data = dir.path().join("data");
    let mut cmd = crate::harness::jobwire_command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);
    cmd.env("PATH", &empty);
    let ran = crate::harness::run_command(cmd, Duration::from_secs(20)).await;
    assert_ne!(ran.code, Some(0));
    let message = ran.stderr.to_lowercase();
    assert!(
        message.contains("redis-server") && message.contains("install") && message.contains("--redis-url"),
        "the message tells how to install redis-server or pass --redis-url: {}",
        ran.stderr
    );
}

#[tokio::test]
async fn kill_9_of_jobwire_takes_its_redis_server_down_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut jobwire = serve(dir.path());
    let id = add(&mut jobwire.client().await, job("q", "t", b"")).await;
    let redis_pid = embedded_redis(&jobwire);
    assert!(is_running(redis_pid));

    jobwire.signal(libc::SIGKILL);
    jobwire.wait_exit(Duration::from_secs(10)).await;
    wait_until(Duration::from_secs(10), "the orphaned redis-server to exit", || !is_running(redis_pid));
    let url = url(dir.path());
    assert!(!answers(&url), "nothing answers on the socket any more");

    // The lock went with the process: a new jobwire takes the directory over, job included
    // (Redis got SIGTERM from the parent-death signal and wrote its AOF).
    let again = serve(dir.path());
    let mut client = again.client().await;
    assert_eq!(info(&mut client, &id).await.state(), JobState::Waiting);
    assert_invariants_at(&url, PREFIX, "q").await;
}

#[tokio::test]
async fn a_crashed_embedded_redis_is_restarted_with_its_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let jobwire = serve(dir.path());
    let mut client = jobwire.client().await;
    let kept = add(&mut client, job("q", "t", b"before the crash")).await;
    // The AOF is fsynced every second: let the add reach the disk before pulling the plug.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let first = embedded_redis(&jobwire);
    // SAFETY: killing a process this test's own child started.
    unsafe { libc::kill(pid_t(first), libc::SIGKILL) };
    wait_until(Duration::from_secs(15), "a new redis-server child", || {
        children_of(jobwire.pid()).iter().any(|(pid, cmd)| *pid != first && cmd.contains("redis-server"))
    });
    let mut added = None;
    for _ in 0..100 {
        if let Ok(resp) = client.add_job(job("q", "t", b"after the crash")).await {
            added = Some(resp.into_inner().job_id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(added.is_some(), "adds work again once the child is back");
    assert_eq!(info(&mut client, &kept).await.state(), JobState::Waiting, "the AOF kept the job");
    assert_invariants_at(&url(dir.path()), PREFIX, "q").await;
    sigterm(jobwire).await;
}

// The launcher behind the embedded default (and the bench's and these tests' Redis), with the
// options later work needs: TCP, AOF, maxmemory, TLS, cluster mode.

/// `CONFIG GET name` through `url`.
fn config_get(url: &str, name: &str) -> String {
    let mut conn = redis::Client::open(url).expect("url").get_connection().expect("connect");
    let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(&mut conn).expect("CONFIG GET");
    pair.get(1).cloned().unwrap_or_default()
}

#[test]
fn the_launcher_listens_on_a_free_tcp_port_with_the_limits_asked_for() {
    let dir = tempfile::tempdir().expect("temp dir");
    let limit = MaxMemory { bytes: 64 << 20, policy: "noeviction".into() };
    let redis = RedisServer::start(RedisConfig::new(dir.path()).tcp().appendonly(true).maxmemory(limit))
        .expect("redis-server starts");
    let port = redis.tcp_port().expect("a TCP port");
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(config_get(&redis.url(), "port"), port.to_string());
    assert_eq!(config_get(&redis.url(), "maxmemory"), (64u64 << 20).to_string());
    assert_eq!(config_get(&redis.url(), "maxmemory-policy"), "noeviction");
    assert_eq!(config_get(&redis.socket_url(), "appendonly"), "yes");
    let second = RedisServer::start(RedisConfig::new(dir.path()));
    assert!(matches!(second, Err(RedisServerError::Locked(_))), "one server per directory: {second:?}");
}

#[test]
fn the_launcher_keeps_hashes_and_sorted_sets_past_16_entries_as_tables() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(RedisConfig::new(dir.path())).expect("redis-server starts");
    assert_eq!(config_get(&redis.socket_url(), "hash-max-listpack-entries"), "16");
    assert_eq!(config_get(&redis.socket_url(), "zset-max-listpack-entries"), "16");
    // A queue's leases and deadlines with 17 jobs in flight: a hash table and a skiplist.
    let mut conn = redis::Client::open(redis.socket_url()).expect("url").get_connection().expect("connect");
    for n in 0..17 {
        let () = redis::cmd("HSET").arg("active").arg(n).arg("token").query(&mut conn).expect("HSET");
        let () = redis::cmd("ZADD").arg("deadlines").arg(n).arg(n).query(&mut conn).expect("ZADD");
    }
    let mut encoding = |key: &str| -> String {
        redis::cmd("OBJECT").arg("ENCODING").arg(key).query(&mut conn).expect("OBJECT ENCODING")
    };
    assert_eq!(encoding("active"), "hashtable");
    assert_eq!(encoding("deadlines"), "skiplist");
}

#[test]
fn the_launcher_starts_a_cluster_node_with_its_nodes_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(RedisConfig::new(dir.path()).cluster()).expect("redis-server starts");
    let bus = redis.cluster_bus_port().expect("a cluster bus port");
    assert_eq!(config_get(&redis.url(), "cluster-enabled"), "yes");
    assert_eq!(config_get(&redis.url(), "cluster-port"), bus.to_string());
    assert!(redis.dir().join("nodes.conf").exists(), "the nodes file is in the directory");
}

#[test]
fn the_launcher_serves_tls_with_the_files_given() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = |name: &str| dir.path().join(name).to_str().expect("utf-8 path").to_owned();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (ca, ca_key, key, csr, cert) =
        (file("ca.crt"), file("ca.key"), file("redis.key"), file("redis.csr"), file("redis.crt"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", &key, "-out", &csr]);
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
    ]);
    let files = TlsFiles { cert: cert.into(), key: key.into(), ca: ca.into() };
    let redis = RedisServer::start(RedisConfig::new(dir.path().join("redis")).tls(files)).expect("redis-server starts");
    let port = redis.tls_port().expect("a TLS port");
    assert_eq!(redis.url(), format!("rediss://127.0.0.1:{port}"));
    assert_eq!(config_get(&redis.socket_url(), "tls-port"), port.to_string());
    assert_eq!(config_get(&redis.socket_url(), "port"), "0", "no plain TCP unless asked");
}
