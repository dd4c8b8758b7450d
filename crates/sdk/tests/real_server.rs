//! The SDK against the real server (gate + logic + SQLite store, in-process on free ports via
//! `longlink_testkit::TestServer`): sends complete and messages arrive once, in order, while
//! the server restarts under running clients; a replaced device stays closed; offline
//! messages arrive by the catch-up merged with the server's login redelivery; links cut
//! mid-stream through a forwarding proxy (seed 004) are resumed and lose nothing.
//! Waits are on conditions with deadlines, never fixed sleeps; nothing asserts on timings.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use longlink_sdk::{Client, ClientConfig, Content, Event, Incoming, KickReason, UserRef};
use longlink_testkit::{TestServer, WAIT, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What a receiving application saw.
#[derive(Default)]
struct Seen {
    /// msgids of messages from the expected sender, in the order the app got them.
    msgids: Mutex<Vec<u64>>,
    reconnects: AtomicUsize,
    /// Reconnects that resumed the held session (the rest logged in again).
    resumed: AtomicUsize,
}

impl Seen {
    fn msgids(&self) -> Vec<u64> {
        self.msgids.lock().expect("lock").clone()
    }
}

/// Drains `incoming` in its own task, recording messages from `from`.
fn record(mut incoming: Incoming, from: UserRef) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let recorder = seen.clone();
    tokio::spawn(async move {
        while let Some(event) = incoming.next_event().await {
            match event {
                Event::Message(message) if message.from == from => {
                    recorder.msgids.lock().expect("lock").push(message.msgid);
                }
                Event::Reconnected { resumed, .. } => {
                    recorder.reconnects.fetch_add(1, Ordering::Relaxed);
                    if resumed {
                        recorder.resumed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {}
            }
        }
    });
    seen
}

/// A config whose attempts are short, so that a dead server is noticed soon.
fn quick(mut config: ClientConfig) -> ClientConfig {
    config.request_timeout = Duration::from_secs(2);
    config.send_deadline = Duration::from_secs(60);
    config
}

/// Waits until the server's health endpoint reports `want` open connections.
async fn wait_for_connections(server: &TestServer, want: u64) {
    let api = server.api_addr();
    wait_until(WAIT, || async move {
        let Ok(mut stream) = tokio::net::TcpStream::connect(api).await else {
            return false;
        };
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body).await;
        body.contains(&format!("\"connections\":{want}"))
    })
    .await
    .unwrap_or_else(|err| panic!("{want} connection(s) on the server: {err}"));
}

async fn wait_for(what: &str, check: impl Fn() -> bool) {
    wait_until(WAIT, || std::future::ready(check()))
        .await
        .unwrap_or_else(|err| panic!("{what}: {err}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_complete_and_arrive_once_in_order_while_the_server_restarts() {
    const RESTARTS: usize = 2;
    /// Sends that must complete between two restarts (so that the sender is busy at each).
    const BETWEEN: usize = 15;
    let mut server = TestServer::start().await;
    let alice = UserRef::new(129, "alice");

    let (receiver, incoming) = Client::connect(quick(server.client_config(130, "bob", "phone")))
        .await
        .expect("bob logs in");
    let seen = record(incoming, alice.clone());
    let (sender, _sender_events) =
        Client::connect(quick(server.client_config(129, "alice", "phone")))
            .await
            .expect("alice logs in");

    // The sender sends one message after the other, until told to stop.
    let progress = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sending = {
        let (progress, stop, sender) = (progress.clone(), stop.clone(), sender.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let receipt = sender
                    .c2c_with_id(
                        UserRef::new(130, "bob"),
                        &format!("m-{i}"),
                        Content::text(format!("{i}")),
                    )
                    .await
                    .unwrap_or_else(|err| panic!("send {i} must complete: {err}"));
                sent.push(receipt.msgid);
                i += 1;
                progress.fetch_add(1, Ordering::Relaxed);
            }
            sent
        })
    };

    for round in 1..=RESTARTS + 1 {
        let at = progress.load(Ordering::Relaxed) + BETWEEN;
        wait_for("the sender makes progress", || {
            progress.load(Ordering::Relaxed) >= at
        })
        .await;
        if round > RESTARTS {
            break;
        }
        // Restart in the middle of the sender's work, on the same ports and data.
        server.restart().await;
        wait_for("the receiver reconnects", || {
            seen.reconnects.load(Ordering::Relaxed) >= round
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let sent = sending.await.expect("sender task");
    assert!(
        sent.windows(2).all(|w| w[0] < w[1]),
        "one msgid per client_msg_id, increasing: {sent:?}"
    );

    wait_for("the receiver sees every message", || {
        seen.msgids().len() >= sent.len()
    })
    .await;
    // One more message after everything: anything shown twice would have come before it.
    let last = sender
        .c2c(UserRef::new(130, "bob"), Content::text("last"))
        .await
        .expect("last send");
    wait_for("the receiver sees the last message", || {
        seen.msgids().contains(&last.msgid)
    })
    .await;
    let mut expected = sent;
    expected.push(last.msgid);
    assert_eq!(
        seen.msgids(),
        expected,
        "every acknowledged message exactly once, in msgid order"
    );
    assert!(receiver.is_connected() && sender.is_connected());
    receiver.close().await;
    sender.close().await;
    server.stop().await;
}

#[tokio::test]
async fn offline_messages_arrive_by_the_catch_up_once_and_in_order() {
    const MESSAGES: usize = 250;
    let server = TestServer::start().await;
    let alice = UserRef::new(129, "alice");
    let (sender, _sender_events) = server.client(129, "alice", "phone").await;
    let mut sent = Vec::new();
    for i in 0..MESSAGES {
        let receipt = sender
            .c2c(UserRef::new(130, "carol"), Content::text(format!("{i}")))
            .await
            .expect("send");
        sent.push(receipt.msgid);
    }

    // carol logs in: the server may redeliver (push) what she has not acknowledged while the
    // client pulls it; she sees each message once, in order, then live ones.
    let (carol, incoming) = server.client(130, "carol", "phone").await;
    let seen = record(incoming, alice);
    wait_for("carol sees the offline messages", || {
        seen.msgids().len() >= MESSAGES
    })
    .await;
    let live = sender
        .c2c(UserRef::new(130, "carol"), Content::text("live"))
        .await
        .expect("send");
    wait_for("carol sees the live message", || {
        seen.msgids().contains(&live.msgid)
    })
    .await;
    sent.push(live.msgid);
    assert_eq!(seen.msgids(), sent);

    // Everything the app took was acknowledged: a later login of the same device (that
    // acknowledges nothing itself) soon finds nothing offline. It logs in once the server has
    // read the old connection to its end (a login that replaces a live session makes the
    // server drop what that session sent but it had not read yet, acknowledgements included;
    // the session itself stays held for a RESUME until this login replaces it).
    carol.close().await;
    wait_for_connections(&server, 1).await;
    let mut config = server.client_config(130, "carol", "phone");
    config.auto_ack = false;
    let (checker, _events) = Client::connect(config).await.expect("carol logs in again");
    wait_until(WAIT, || {
        let checker = checker.clone();
        async move {
            checker
                .pull_offline(0, 0)
                .await
                .is_ok_and(|page| page.messages.is_empty())
        }
    })
    .await
    .expect("every message shown was acknowledged");
    server.stop().await;
}

#[tokio::test]
async fn a_replaced_device_does_not_reconnect() {
    let server = TestServer::start().await;
    let (old, mut old_events) = server.client(129, "erin", "phone").await;
    let (new, _new_events) = server.client(129, "erin", "phone").await;
    let mut kicked = None;
    let closed = loop {
        match tokio::time::timeout(WAIT, old_events.next_event()).await {
            Ok(Some(Event::Kicked { reason, .. })) => kicked = Some(reason),
            Ok(Some(Event::Closed { reason })) => break reason,
            Ok(Some(Event::Message(_) | Event::Error { .. } | Event::Receipt(_))) => continue,
            other => panic!("expected the kick and the end, got {other:?}"),
        }
    };
    assert_eq!(kicked, Some(KickReason::Replaced));
    assert!(closed.starts_with("kicked (REPLACED)"), "{closed}");
    assert!(old.is_closed());
    // The newer session was not kicked back by a reconnect of the old one.
    new.keepalive().await.expect("the newer session is alive");
    assert!(new.is_connected());
    server.stop().await;
}

/// A TCP forwarder to `target` whose live links can all be cut at once.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (links, done) = (cut.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = done.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { return };
                let cut = links.lock().expect("lock").clone();
                tokio::spawn(forward(client, target, cut));
            }
        });
        Proxy { addr, cut, stop }
    }

    /// Drops every link open now (new connections go through again).
    fn cut(&self) {
        let old = std::mem::replace(
            &mut *self.cut.lock().expect("lock"),
            CancellationToken::new(),
        );
        old.cancel();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, cut: CancellationToken) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        () = cut.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
    // Dropping both sockets closes both directions.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_cut_mid_stream_are_resumed_and_every_message_arrives_once_in_order() {
    const CUTS: usize = 3;
    const BETWEEN: usize = 40;
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.gate_addr()).await;
    let alice = UserRef::new(129, "alice");
    let bob = UserRef::new(130, "bob");

    let mut config = server.client_config(130, "bob", "phone");
    config.addr = proxy.addr.to_string();
    let (receiver, incoming) = Client::connect(config).await.expect("bob logs in");
    assert!(
        !receiver.login_response().resume_token.is_empty(),
        "the server offers a resume token"
    );
    let seen = record(incoming, alice.clone());
    let (sender, _sender_events) = server.client(129, "alice", "phone").await;

    let progress = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let sending = {
        let (progress, stop, sender, bob) =
            (progress.clone(), stop.clone(), sender.clone(), bob.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut i = 0;
            while !stop.is_cancelled() {
                let receipt = sender
                    .c2c_with_id(
                        bob.clone(),
                        &format!("m-{i}"),
                        Content::text(format!("{i}")),
                    )
                    .await
                    .unwrap_or_else(|err| panic!("send {i}: {err}"));
                sent.push(receipt.msgid);
                i += 1;
                progress.fetch_add(1, Ordering::Relaxed);
            }
            sent
        })
    };

    for round in 1..=CUTS {
        // Cut while messages are flowing: after the receiver has seen some of this round's.
        let at = seen.msgids().len() + BETWEEN / 2;
        wait_for("the receiver gets messages", || seen.msgids().len() >= at).await;
        proxy.cut();
        let sent_at_cut = progress.load(Ordering::Relaxed);
        wait_for("the sender goes on during the outage", || {
            progress.load(Ordering::Relaxed) >= sent_at_cut + BETWEEN / 2
        })
        .await;
        wait_for("the receiver is back", || {
            seen.reconnects.load(Ordering::Relaxed) >= round
        })
        .await;
    }
    stop.cancel();
    let sent = sending.await.expect("sender task");
    let last = sender
        .c2c(bob.clone(), Content::text("last"))
        .await
        .expect("last send");
    let mut expected = sent;
    expected.push(last.msgid);
    wait_for("the receiver sees the last message", || {
        seen.msgids().contains(&last.msgid)
    })
    .await;
    assert_eq!(
        seen.msgids(),
        expected,
        "every acknowledged message exactly once, in msgid order"
    );
    assert_eq!(
        seen.resumed.load(Ordering::Relaxed),
        CUTS,
        "each cut was resumed, never a fresh login"
    );
    receiver.close().await;
    sender.close().await;
    server.stop().await;
}
