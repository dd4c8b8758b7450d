//! Seed 004 against the real server: the receiver's TCP link goes through a small forwarding
//! proxy that the test cuts (both directions, at once, like a phone losing its radio) while a
//! sender keeps sending. The SDK resumes its held session (RESUME, no new login) and the
//! application sees every acknowledged message exactly once, in msgid order. Waits are on
//! conditions with deadlines; nothing asserts on timings.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use longlink_sdk::{Client, Content, Event, Incoming, UserRef};
use longlink_testkit::{TestServer, WAIT, wait_until};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

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

#[derive(Default)]
struct Seen {
    msgids: Mutex<Vec<u64>>,
    resumed: AtomicUsize,
    logged_in_again: AtomicUsize,
}

impl Seen {
    fn msgids(&self) -> Vec<u64> {
        self.msgids.lock().expect("lock").clone()
    }
}

fn record(mut incoming: Incoming, from: UserRef) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let recorder = seen.clone();
    tokio::spawn(async move {
        while let Some(event) = incoming.next_event().await {
            match event {
                Event::Message(message) if message.from == from => {
                    recorder.msgids.lock().expect("lock").push(message.msgid);
                }
                Event::Reconnected { resumed: true, .. } => {
                    recorder.resumed.fetch_add(1, Ordering::Relaxed);
                }
                Event::Reconnected { resumed: false, .. } => {
                    recorder.logged_in_again.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    });
    seen
}

async fn wait_for(what: &str, check: impl Fn() -> bool) {
    wait_until(WAIT, || std::future::ready(check()))
        .await
        .unwrap_or_else(|err| panic!("{what}: {err}"));
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
            seen.resumed.load(Ordering::Relaxed) + seen.logged_in_again.load(Ordering::Relaxed)
                >= round
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
