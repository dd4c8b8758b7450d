//! Each throwaway server starts, accepts connections, survives a restart on its port, and is
//! gone after drop.

use std::net::TcpStream;

use longlink_testservers::{NatsServer, PostgresServer, RedisServer};

fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn redis_starts_restarts_and_stops() {
    let mut redis = RedisServer::start().expect("redis");
    assert!(accepts(redis.port()));
    assert!(redis.url().starts_with("redis://127.0.0.1:"));
    redis.kill();
    assert!(!accepts(redis.port()));
    redis.restart().expect("restart");
    assert!(accepts(redis.port()));
    let port = redis.port();
    drop(redis);
    assert!(!accepts(port));
}

#[test]
fn nats_starts_restarts_and_stops() {
    let mut nats = NatsServer::start().expect("nats");
    assert!(accepts(nats.port()));
    nats.restart().expect("restart");
    assert!(accepts(nats.port()));
    let port = nats.port();
    drop(nats);
    assert!(!accepts(port));
}

#[test]
fn postgres_starts_restarts_and_stops() {
    let mut pg = PostgresServer::start().expect("postgres");
    assert!(accepts(pg.port()));
    pg.restart().expect("restart");
    assert!(accepts(pg.port()));
    let port = pg.port();
    drop(pg);
    assert!(!accepts(port));
}
