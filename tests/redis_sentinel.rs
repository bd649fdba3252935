//! `RedisArchive` through Redis Sentinel, on a master, two replicas and three sentinels that the
//! test starts itself (`support/redis_cluster.rs`): the master is killed mid-run; operations fail
//! with a clear error during the failover and succeed after it, on the new master; and the
//! acknowledged writes lost are counted under each `replicas_ack` setting.
//!
//! Without `redis-server` the test skips with a notice, or fails under
//! `ARCHIVE_REDIS_REQUIRED=1`.

#![cfg(feature = "archive-redis")]

#[path = "support/redis_cluster.rs"]
mod cluster_servers;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use session_archive::{Archive, Error, RedisArchive};

use self::cluster_servers::Sentinels;
use self::redis_server::or_skip;

/// What one run under a setting saw.
#[derive(Debug)]
struct Run {
    acknowledged: usize,
    lost: usize,
    failed: usize,
    /// The mean time of an acknowledged write before the kill.
    write_time: Duration,
}

/// Writes `k0`, `k1`, … through Sentinel, kills the master (SIGKILL) after 300 acknowledged
/// writes, goes on until 100 writes succeeded after the failover, then reads every acknowledged
/// key back through a new archive.
fn run(replicas_ack: Option<(usize, Duration)>) -> Option<Run> {
    let mut setup = or_skip(Sentinels::start(2))?;
    let timeout = Some(Duration::from_secs(1));
    let sentinels = setup.sentinel_urls();
    let open = || {
        RedisArchive::sentinel("mymaster", sentinels.clone())
            .prefix("app")
            .connect_timeout(timeout)
            .response_timeout(timeout)
            .replicas_ack(replicas_ack)
            .open()
    };
    let archive = open().expect("open through Sentinel");
    let (mut acked, mut failed, mut after) = (Vec::new(), 0, 0);
    let started = Instant::now();
    let mut write_time = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(40);
    for i in 0.. {
        assert!(
            Instant::now() < deadline,
            "no failover within 40 s: {failed} failed"
        );
        if acked.len() == 300 && write_time.is_zero() {
            write_time = started.elapsed() / 300;
            setup.master.kill();
        }
        let call = Instant::now();
        match archive.set("d", &format!("k{i}"), b"v") {
            Ok(()) => {
                acked.push(i);
                after += usize::from(failed > 0);
            }
            Err(err) => {
                assert!(
                    matches!(
                        err,
                        Error::Backend {
                            backend: "redis",
                            ..
                        }
                    ),
                    "{err:?}"
                );
                assert!(
                    call.elapsed() < Duration::from_secs(4),
                    "{:?}",
                    call.elapsed()
                );
                failed += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if after == 100 {
            break;
        }
    }
    let reader = open().expect("open on the new master");
    let lost = acked
        .iter()
        .filter(|i| {
            reader
                .get("d", &format!("k{i}"))
                .expect("read on the new master")
                .is_none()
        })
        .count();
    Some(Run {
        acknowledged: acked.len(),
        lost,
        failed,
        write_time,
    })
}

impl Run {
    fn report(&self, setting: &str) {
        eprintln!(
            "replicas_ack {setting}: {} acknowledged, {} lost, {} failed during the failover, \
             {:?} a write before it",
            self.acknowledged, self.lost, self.failed, self.write_time
        );
    }
}

#[test]
fn a_failover_is_followed_and_replicas_ack_keeps_acknowledged_writes() {
    let Some(plain) = run(None) else { return };
    plain.report("None");
    assert!(plain.failed > 0, "the failover was seen: {plain:?}");
    let Some(acked) = run(Some((1, Duration::from_millis(500)))) else {
        return;
    };
    acked.report("(1, 500 ms)");
    assert!(acked.failed > 0, "the failover was seen: {acked:?}");
    assert_eq!(acked.lost, 0, "a write on a replica survives its promotion");
}
