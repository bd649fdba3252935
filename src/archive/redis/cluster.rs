//! What is particular to a Redis Cluster: hash slots, the cluster's masters, and the listing of
//! domains, which walks every master in turn.

use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{ErrorKind, RedisError, RedisResult};

use super::connection::{Conn, Pool, backend, masters_of};
use crate::archive::Page;
use crate::error::{Error, Result};

/// How many hash slots a cluster has.
const SLOTS: u16 = 16384;

/// Redis Cluster's hash slot of the key `name`: CRC16 (XMODEM) of its hash tag, the bytes
/// between its first `{` and the first `}` after it when there are any, else of the whole name.
pub(super) fn slot(name: &[u8]) -> u16 {
    let tag = name.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &name[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tag.unwrap_or(name)) % SLOTS
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc
}

/// The cluster's masters as `host:port`, sorted: the order a listing walks them in.
fn masters(conn: &mut Conn) -> RedisResult<Vec<String>> {
    masters_of(conn)
}

/// A domain listing's cursor on a cluster: `{scan cursor}@{host}:{port}`, the master the walk is
/// on and where it is in that master's `SCAN`.
fn parse_cursor(cursor: &str) -> Result<(String, u64)> {
    let invalid = || Error::InvalidCursor {
        cursor: cursor.to_owned(),
    };
    let (position, node) = cursor.split_once('@').ok_or_else(invalid)?;
    let (host, port) = node.rsplit_once(':').ok_or_else(invalid)?;
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if host.is_empty() || !digits(position) || !digits(port) || port.parse::<u16>().is_err() {
        return Err(invalid());
    }
    let position = position.parse().map_err(|_| invalid())?;
    Ok((node.to_owned(), position))
}

/// One `SCAN` step on the master `node`.
fn scan_node(
    conn: &mut Conn,
    node: &str,
    position: u64,
    pattern: &str,
    count: usize,
) -> RedisResult<(u64, Vec<Vec<u8>>)> {
    let (Conn::Cluster(cluster), Some((host, port))) = (conn, node.rsplit_once(':')) else {
        return Err(RedisError::from((
            ErrorKind::Client,
            "a cluster listing needs a cluster connection and a node's address",
        )));
    };
    let port = port
        .parse()
        .map_err(|_| RedisError::from((ErrorKind::Client, "a node's port is not a number")))?;
    let mut scan = ::redis::cmd("SCAN");
    scan.arg(position)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(count)
        .arg("TYPE")
        .arg("hash");
    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host: host.to_owned(),
        port,
    });
    Ok(::redis::from_redis_value(
        cluster.route_command(&scan, routing)?,
    )?)
}

/// One page of the domains across the cluster: `SCAN … MATCH pattern` on each master in turn
/// (sorted by address), keeping what `keep` lists. While a step finds none, it scans on, so only
/// the last page can be empty.
pub(super) fn list_domains(
    pool: &Pool,
    cursor: Option<&str>,
    limit: usize,
    pattern: &str,
    keep: impl Fn(&[u8]) -> Option<String>,
) -> Result<Page> {
    let given = cursor.map(parse_cursor).transpose()?;
    let masters = pool.run_read("list the cluster's masters", masters)?;
    let (mut node, mut position) = match given {
        Some((node, _)) if !masters.contains(&node) => {
            let lost = RedisError::from((
                ErrorKind::Client,
                "the cursor's node is no longer a master of the cluster",
                node,
            ));
            return Err(backend("list domains", lost));
        }
        Some(given) => given,
        None => match masters.first() {
            Some(first) => (first.clone(), 0),
            None => return Ok(Page::default()),
        },
    };
    let mut names = Vec::new();
    loop {
        let (next, raw) = pool.run_read("list domains", |conn| {
            scan_node(conn, &node, position, pattern, limit.max(1))
        })?;
        names.extend(raw.iter().filter_map(|name| keep(name)));
        position = next;
        if position == 0 {
            match masters.iter().find(|master| **master > node) {
                Some(master) => node.clone_from(master),
                None => {
                    return Ok(Page {
                        names,
                        cursor: None,
                    });
                }
            }
        }
        if !names.is_empty() {
            return Ok(Page {
                names,
                cursor: Some(format!("{position}@{node}")),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // Values from `CLUSTER KEYSLOT` and the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"app/{foo}"), slot(b"foo"));
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // An empty tag hashes the whole name; only the first `{` opens a tag.
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }

    #[test]
    fn cluster_cursors_name_a_node_and_a_position() {
        assert_eq!(
            parse_cursor("17@127.0.0.1:7000").unwrap(),
            ("127.0.0.1:7000".to_owned(), 17)
        );
        assert_eq!(
            parse_cursor("0@::1:7000").unwrap(),
            ("::1:7000".to_owned(), 0)
        );
        for bad in [
            "",
            "17",
            "@127.0.0.1:7000",
            "x@h:1",
            "1@h",
            "1@:1",
            "1@h:70000",
            "1@h:",
        ] {
            assert!(
                matches!(parse_cursor(bad), Err(Error::InvalidCursor { cursor }) if cursor == bad),
                "{bad:?}"
            );
        }
    }
}
