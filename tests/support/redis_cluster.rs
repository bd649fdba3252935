//! Redis servers in the shapes that need several: a 3-master Cluster, and a master with a replica
//! and three sentinels. Each test file that needs one includes this file beside
//! `redis_server.rs` (whose `or_skip` turns a missing `redis-server` into a skip, or a failure
//! under `ARCHIVE_REDIS_REQUIRED=1`).
//!
//! Every server is a [`Node`] of `redis_server.rs`: it never outlives the test process, and it
//! is the server started here, never another that holds its port. Their files live in a
//! temporary directory removed with the value that started them.

#![allow(dead_code, reason = "each test file uses part of it")]

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

pub use super::redis_server::Node;

/// A 3-master Redis Cluster on loopback, without replicas or persistence.
pub struct Cluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts three cluster-enabled servers, joins them with `redis-cli --cluster create`, and
    /// waits until every node reports `cluster_state:ok`. `extra` goes to every server.
    pub fn start(extra: &[&str]) -> Result<Cluster, String> {
        let dir = tempfile::tempdir().map_err(|err| format!("no temporary directory: {err}"))?;
        let mut nodes = Vec::new();
        for i in 0..3 {
            let config = format!("nodes-{i}.conf");
            let mut args = vec![
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &config,
                "--save",
                "",
                "--appendonly",
                "no",
            ];
            args.extend_from_slice(extra);
            nodes.push(Node::start_free(Some(dir.path()), &args, true)?);
        }
        let addresses: Vec<String> = nodes.iter().map(Node::address).collect();
        let mut create = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| format!("cannot run redis-cli: {err}"))?;
        // redis-cli waits for the nodes to agree with no end of its own.
        let deadline = Instant::now() + Duration::from_secs(60);
        let created = loop {
            match create.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = create.kill();
                    let _ = create.wait();
                    return Err("redis-cli --cluster create did not finish in 60 s".to_owned());
                }
            }
        };
        if !created.success() {
            return Err("redis-cli --cluster create failed".to_owned());
        }
        let cluster = Cluster { nodes, _dir: dir };
        cluster.wait_ok()?;
        Ok(cluster)
    }

    fn wait_ok(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ok = self.nodes.iter().all(|node| {
                node.try_control()
                    .and_then(|mut conn| {
                        redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut conn)
                    })
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if ok {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err("the cluster did not reach cluster_state:ok".to_owned())
    }

    /// The seed URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The node id of each node, in `nodes` order.
    pub fn ids(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| {
                redis::cmd("CLUSTER")
                    .arg("MYID")
                    .query(&mut node.control())
                    .expect("CLUSTER MYID")
            })
            .collect()
    }

    /// The index in `nodes` of the master that serves `slot`.
    pub fn owner(&self, slot: u16) -> usize {
        let ranges: Vec<(u16, u16, (String, u16))> = {
            let values: Vec<redis::Value> = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query(&mut self.nodes[0].control())
                .expect("CLUSTER SLOTS");
            values
                .into_iter()
                .map(|value| {
                    let redis::Value::Array(range) = value else {
                        panic!("a slot range is an array")
                    };
                    let start = redis::from_redis_value_ref(&range[0]).expect("a start");
                    let end = redis::from_redis_value_ref(&range[1]).expect("an end");
                    let redis::Value::Array(node) = &range[2] else {
                        panic!("a master is an array")
                    };
                    let host = redis::from_redis_value_ref(&node[0]).expect("a host");
                    let port = redis::from_redis_value_ref(&node[1]).expect("a port");
                    (start, end, (host, port))
                })
                .collect()
        };
        let (_, _, (_, port)) = ranges
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .expect("every slot is served");
        self.nodes
            .iter()
            .position(|node| node.port == *port)
            .expect("the owner is one of the nodes")
    }

    /// The hash slot of `key`, by the cluster's own `CLUSTER KEYSLOT`.
    pub fn slot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes[0].control())
            .expect("CLUSTER KEYSLOT")
    }

    /// Moves `slot` from its master to the node `to`, key by key, as `redis-cli --cluster
    /// reshard` does: `SETSLOT … IMPORTING`/`MIGRATING`, `MIGRATE` in batches, then `SETSLOT
    /// … NODE` on every node.
    pub fn move_slot(&self, slot: u16, to: usize) {
        let from = self.owner(slot);
        if from == to {
            return;
        }
        let ids = self.ids();
        let mut source = self.nodes[from].control();
        let mut target = self.nodes[to].control();
        let setslot = |conn: &mut redis::Connection, state: &str, id: &str| {
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(id)
                .query::<()>(conn)
                .expect("CLUSTER SETSLOT");
        };
        setslot(&mut target, "IMPORTING", &ids[from]);
        setslot(&mut source, "MIGRATING", &ids[to]);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(10)
                .query(&mut source)
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            for key in keys {
                // One key at a time, with a pause, so that writers meet the slot half moved.
                redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(self.nodes[to].port)
                    .arg(&key)
                    .arg(0)
                    .arg(5000)
                    .query::<()>(&mut source)
                    .expect("MIGRATE");
                thread::sleep(Duration::from_millis(5));
            }
        }
        for node in &self.nodes {
            setslot(&mut node.control(), "NODE", &ids[to]);
        }
    }
}

/// The cluster shared by a test binary's suites, started once and kept (as a static, it is never
/// dropped; its servers exit with this process).
pub fn shared_cluster() -> Result<Vec<String>, String> {
    static SHARED: OnceLock<Result<(Vec<String>, Cluster), String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let cluster = Cluster::start(&[])?;
            Ok((cluster.urls(), cluster))
        })
        .as_ref()
        .map(|(urls, _)| urls.clone())
        .map_err(Clone::clone)
}

/// Whether the shared cluster is there; the suites run only then.
pub fn cluster_ready() -> bool {
    super::redis_server::or_skip(shared_cluster()).is_some()
}

/// An archive on the shared cluster under `prefix`.
pub fn open_cluster(prefix: &str) -> session_archive::RedisArchive {
    session_archive::RedisArchive::cluster(shared_cluster().expect("cluster_ready checked it"))
        .prefix(prefix)
        .open()
        .expect("open the cluster archive")
}

/// A master, `replicas` replicas of it and three sentinels monitoring it as `mymaster`, quick to
/// act: a master is down after 500 ms without an answer, and a failover may take 2 s.
#[allow(
    clippy::struct_field_names,
    reason = "the sentinels are what it is named after"
)]
pub struct Sentinels {
    pub master: Node,
    pub replicas: Vec<Node>,
    pub sentinels: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Sentinels {
    pub fn start(replicas: usize) -> Result<Sentinels, String> {
        let dir = tempfile::tempdir().map_err(|err| format!("no temporary directory: {err}"))?;
        let plain = ["--save", "", "--appendonly", "no"];
        let master = Node::start_free(Some(dir.path()), &plain, false)?;
        let master_port = master.port.to_string();
        let mut copies = Vec::new();
        for _ in 0..replicas {
            let mut args = plain.to_vec();
            args.extend(["--replicaof", "127.0.0.1", &master_port]);
            copies.push(Node::start_free(Some(dir.path()), &args, false)?);
        }
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            let text = format!(
                "sentinel monitor mymaster 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds mymaster 500\n\
                 sentinel failover-timeout mymaster 2000\n\
                 sentinel parallel-syncs mymaster 1\n"
            );
            std::fs::write(&conf, text)
                .map_err(|err| format!("cannot write {}: {err}", conf.display()))?;
            let conf = conf.to_string_lossy().into_owned();
            sentinels.push(Node::start_free(
                Some(dir.path()),
                &[&conf, "--sentinel"],
                false,
            )?);
        }
        let setup = Sentinels {
            master,
            replicas: copies,
            sentinels,
            _dir: dir,
        };
        setup.wait_discovered(replicas)?;
        Ok(setup)
    }

    /// Waits until every sentinel knows the replicas and the two other sentinels, and every
    /// replica's link to the master is up: before that a failover could not happen.
    fn wait_discovered(&self, replicas: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let sentinels_ready = self.sentinels.iter().all(|sentinel| {
                let mut conn = sentinel.control();
                let mut known = |what: &str| {
                    redis::cmd("SENTINEL")
                        .arg(what)
                        .arg("mymaster")
                        .query::<Vec<redis::Value>>(&mut conn)
                        .map_or(0, |list| list.len())
                };
                known("replicas") == replicas && known("sentinels") == 2
            });
            let linked = self.replicas.iter().all(|replica| {
                redis::cmd("INFO")
                    .arg("replication")
                    .query::<String>(&mut replica.control())
                    .is_ok_and(|info| info.contains("master_link_status:up"))
            });
            if sentinels_ready && linked {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err("the sentinels did not discover the replicas and each other".to_owned())
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(Node::url).collect()
    }
}
