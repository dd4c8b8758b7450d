//! The live dashboard in a real browser: a headless Chromium (driven over the DevTools
//! protocol by `longlink_testkit::chromium`) opens `GET /` of a real server and the test reads
//! the page, never reloading it, while SDK clients connect and chat: the figures must follow,
//! and the page must say when the server is gone and recover when it is back.
//!
//! Needs `chromium` (scripts/test installs it); without it the tests fail and say so.
//!
//! The screenshot in the docs is made by this test with live traffic running (about two
//! minutes, so that the charts have history):
//!
//! ```sh
//! LONGLINK_SCREENSHOT=1 cargo test -p longlink-server --test dashboard -- --nocapture
//! ```
//!
//! which writes `docs/img/dashboard.png`; without the variable nothing is written.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use longlink_sdk::{Client, Content, Event, Incoming, UserRef};
use longlink_testkit::chromium::{Browser, Page};
use longlink_testkit::{TestServer, WAIT};

/// JavaScript for the text of the element with `id`.
fn text_of(id: &str) -> String {
    format!("document.getElementById('{id}').textContent")
}

/// JavaScript for the number shown by the element with `id` (thousands separators removed;
/// NaN for "—").
fn number_of(id: &str) -> String {
    format!("Number({}.replace(/,/g, ''))", text_of(id))
}

const UPDATES: &str = "Number(document.body.dataset.updates)";

/// What the page shows, for failure messages.
async fn page_state(page: &Page) -> String {
    page.eval(
        "JSON.stringify({status: document.getElementById('status').textContent, \
         updates: document.body.dataset.updates, \
         connections: document.getElementById('connections').textContent, \
         sessions: document.getElementById('sessions').textContent, \
         total_messages: document.getElementById('total-messages').textContent, \
         e2e_p50: document.getElementById('c2c-e2e-p50').textContent, \
         gates: document.getElementById('gates').innerText, \
         appcodes: document.getElementById('appcodes').innerText})",
    )
    .await
    .map(|state| state.as_str().unwrap_or_default().to_owned())
    .unwrap_or_else(|error| format!("(page unreadable: {error:#})"))
}

/// Waits (at most [`WAIT`]) until `condition` (JavaScript) holds in the page; on failure the
/// error says what was awaited and what the page showed.
async fn wait_for(page: &Page, what: &str, condition: &str) -> anyhow::Result<()> {
    if let Err(error) = page.wait_for(condition, WAIT).await {
        let state = page_state(page).await;
        return Err(error.context(format!("waiting for {what}; the page shows {state}")));
    }
    Ok(())
}

async fn updates(page: &Page) -> anyhow::Result<u64> {
    page.eval(UPDATES)
        .await?
        .as_u64()
        .context("dataset.updates is not a number")
}

async fn open_dashboard(server: &TestServer) -> anyhow::Result<(Browser, Page)> {
    let browser = Browser::launch().await?;
    let page = browser.new_page().await?;
    page.set_viewport(1440, 900, 1.0).await?;
    page.navigate(&format!("http://{}/", server.api_addr()))
        .await?;
    // A mark that a reload would wipe: the figures below must arrive without one.
    page.eval("window.__sameDocument = true").await?;
    Ok((browser, page))
}

async fn next_message(incoming: &mut Incoming) -> anyhow::Result<u64> {
    loop {
        match tokio::time::timeout(WAIT, incoming.next_event()).await {
            Ok(Some(Event::Message(message))) => return Ok(message.msgid),
            Ok(Some(Event::Error { .. } | Event::Receipt(_))) => continue,
            other => anyhow::bail!("expected a message, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_live_traffic_without_reloading() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let (browser, page) = open_dashboard(&server).await?;

    wait_for(
        &page,
        "the first update: live, no connections",
        &format!(
            "{} === 'live' && {} === '0' && {UPDATES} >= 1",
            text_of("status"),
            text_of("connections")
        ),
    )
    .await?;
    let updates_before = updates(&page).await?;

    // Two users chat: alice sends, bob receives (and acknowledges: auto_ack).
    const MESSAGES: u64 = 12;
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let (_bob, mut bob_in) = server.client(130, "bob", "phone").await;
    for i in 0..MESSAGES {
        let receipt = alice
            .c2c(UserRef::new(130, "bob"), Content::text(format!("m{i}")))
            .await?;
        assert_eq!(next_message(&mut bob_in).await?, receipt.msgid);
    }

    wait_for(
        &page,
        "two connections and two sessions",
        &format!(
            "{} === 2 && {} === 2",
            number_of("connections"),
            number_of("sessions")
        ),
    )
    .await?;
    wait_for(
        &page,
        "the messages in the totals",
        &format!("{} >= {MESSAGES}", number_of("total-messages")),
    )
    .await?;
    // One device each: every MSG written went to bob, who acknowledged it.
    wait_for(
        &page,
        "a delivery rate of 100%",
        &format!("{} === '100%'", text_of("delivery-rate")),
    )
    .await?;
    wait_for(
        &page,
        "c2c latency percentiles in ms",
        &format!(
            "[{}, {}, {}, {}].every(t => /^[0-9,.]+ ms$/.test(t))",
            text_of("c2c-ack-p50"),
            text_of("c2c-ack-p99"),
            text_of("c2c-e2e-p50"),
            text_of("c2c-e2e-p99")
        ),
    )
    .await?;
    wait_for(
        &page,
        "one healthy gate with both connections",
        "(() => { const rows = document.querySelectorAll('#gates tr[data-gate]'); \
         return rows.length === 1 && rows[0].dataset.healthy === 'true' \
         && rows[0].querySelector('.badge').textContent === 'healthy' \
         && rows[0].cells[3].textContent === '2'; })()",
    )
    .await?;
    wait_for(
        &page,
        "one session each for appcodes 129 and 130",
        "['129', '130'].every(a => { \
         const row = document.querySelector(`#appcodes tr[data-appcode='${a}']`); \
         return row !== null && row.cells[2].textContent === '1'; })",
    )
    .await?;
    wait_for(
        &page,
        "more updates, in the same document",
        &format!("{UPDATES} > {updates_before} && window.__sameDocument === true"),
    )
    .await?;
    assert_eq!(page.eval_string(&text_of("status")).await?, "live");

    if std::env::var("LONGLINK_SCREENSHOT").as_deref() == Ok("1") {
        screenshot(&server, &page).await?;
    }
    drop(browser);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_says_disconnected_and_recovers() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let api_addr = server.api_addr();
    let (_browser, page) = open_dashboard(&server).await?;
    wait_for(
        &page,
        "the first update",
        &format!("{} === 'live' && {UPDATES} >= 1", text_of("status")),
    )
    .await?;

    server.stop().await;
    wait_for(
        &page,
        "the disconnected state",
        &format!(
            "{} === 'disconnected — retrying' && !document.getElementById('banner').hidden",
            text_of("status")
        ),
    )
    .await?;
    let updates_while_down = updates(&page).await?;

    // A server on the same HTTP port again: the page finds it on its own.
    let server = TestServer::start_with(|config| config.api.listen = api_addr).await;
    wait_for(
        &page,
        "live again after the server came back",
        &format!(
            "{} === 'live' && {UPDATES} > {updates_while_down} \
             && document.getElementById('banner').hidden && window.__sameDocument === true",
            text_of("status")
        ),
    )
    .await?;
    server.stop().await;
    Ok(())
}

/// With traffic running, waits until the charts hold almost their whole window of samples
/// and the figures are non-zero, then captures the whole page into docs/img/dashboard.png.
async fn screenshot(server: &TestServer, page: &Page) -> anyhow::Result<()> {
    // Customers, drivers, a few merchants and support agents, one device each.
    let mut users: Vec<(u32, String)> = Vec::new();
    for (appcode, kind, count) in [
        (129, "customer", 9),
        (130, "driver", 7),
        (131, "merchant", 3),
        (132, "agent", 2),
    ] {
        users.extend((1..=count).map(|n| (appcode, format!("{kind}-{n}"))));
    }
    let mut clients: Vec<Client> = Vec::new();
    let mut readers = Vec::new();
    for (appcode, uid) in &users {
        let (client, mut incoming) = server.client(*appcode, uid, "phone").await;
        clients.push(client);
        // Take what arrives so that it is acknowledged (auto_ack).
        readers.push(tokio::spawn(async move {
            while incoming.next_event().await.is_some() {}
        }));
    }
    // A wavy load: every 50 ms a few users write to a few others (never to themselves).
    let traffic = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for step in 0usize.. {
            tick.tick().await;
            let wave = (step as f64 / 90.0).sin() + 1.2;
            for k in 0..1 + (wave * 3.0) as usize {
                let from = (step * 7 + k * 3) % clients.len();
                let to = (from + 1 + (step + k * 5) % (users.len() - 1)) % users.len();
                let (appcode, uid) = &users[to];
                let _ = clients[from]
                    .c2c(
                        UserRef::new(*appcode, uid.as_str()),
                        Content::text(format!("order {step}-{k}: on my way")),
                    )
                    .await;
            }
        }
    });

    page.set_color_scheme("dark").await?;
    let samples = "fetch('/v1/stats/summary').then(r => r.json()).then(s => s.series.at_ms.length)";
    page.wait_for(
        &format!("{samples}.then(n => n >= 110)"),
        Duration::from_secs(180),
    )
    .await
    .context("the charts' window of samples")?;
    wait_for(
        page,
        "non-zero live figures",
        &format!(
            "{} > 0 && {} > 0 && /ms$/.test({})",
            number_of("messages-per-sec"),
            number_of("deliveries-per-sec"),
            text_of("c2c-e2e-p99")
        ),
    )
    .await?;
    let height = page
        .eval("document.documentElement.scrollHeight")
        .await?
        .as_u64()
        .context("page height")?;
    page.set_viewport(1440, u32::try_from(height)?, 1.0).await?;
    let seen = updates(page).await?;
    wait_for(
        page,
        "an update drawn at the final size",
        &format!("{UPDATES} > {seen} + 1"),
    )
    .await?;

    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/img/dashboard.png");
    page.screenshot_png(&path).await?;
    println!("wrote {}", path.display());
    traffic.abort();
    for reader in readers {
        reader.abort();
    }
    Ok(())
}
