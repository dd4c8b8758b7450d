//! The browser chat page (`GET /chat`, sdk-ts/chat/) in a real headless Chromium against a
//! real server: people sign in with the development form, chat with each other, with a
//! terminal (`longlink client chat`) and with SDK clients; the page survives a reload and a
//! server restart, and says what is wrong when the token or a message is bad.
//!
//! Needs `chromium` (scripts/test installs it) and, for the terminal test, the `longlink`
//! binary (`cargo build -p longlink-cli`, or `LONGLINK_BIN`); without them the tests fail and
//! say so. The screenshot test writes `target/test-artifacts/chat.png` (and `chat-narrow.png`,
//! `chat-login.png`).

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use longlink_sdk::{Content, UserRef};
use longlink_testkit::chromium::{Browser, Page};
use longlink_testkit::{TestServer, WAIT};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const SHIFT: u32 = 8;

/// Collects the page's uncaught errors and console errors into `window.__errors`.
const ERROR_TRAP: &str = "window.__errors = []; \
    window.addEventListener('error', e => window.__errors.push(String(e.message))); \
    window.addEventListener('unhandledrejection', e => window.__errors.push('unhandled: ' + String(e.reason))); \
    const __consoleError = console.error; \
    console.error = (...a) => { window.__errors.push(a.map(String).join(' ')); __consoleError(...a); };";

/// A JavaScript string literal for `text`.
fn js(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// What the page shows, for failure messages.
async fn page_state(page: &Page) -> String {
    page.eval(
        "JSON.stringify({view: document.body.dataset.view, state: document.body.dataset.state, \
         pane: document.body.dataset.pane, \
         loginError: document.getElementById('login-error').textContent, \
         composerError: document.getElementById('composer-error').textContent, \
         banner: document.getElementById('banner').textContent, \
         conversations: [...document.querySelectorAll('#conversations li')].map(li => li.dataset.peer + '(' + li.dataset.unread + ')'), \
         peer: document.getElementById('peer-name').textContent, \
         messages: [...document.querySelectorAll('#messages li.msg')].map(li => (li.classList.contains('mine') ? '> ' : '< ') + li.querySelector('.content').textContent.slice(0, 40) + ' [' + li.dataset.status + ']').slice(-12), \
         history: document.getElementById('history-status').textContent, \
         count: document.querySelectorAll('#messages li.msg').length, \
         scroll: ['scrollTop', 'scrollHeight', 'clientHeight'].map(k => document.getElementById('scroller')[k]), \
         errors: window.__errors})",
    )
    .await
    .map(|state| state.as_str().unwrap_or_default().to_owned())
    .unwrap_or_else(|error| format!("(page unreadable: {error:#})"))
}

/// Waits (at most [`WAIT`]) until `condition` holds in the page; on failure the error says
/// what was awaited and what the page showed.
async fn wait_for(page: &Page, what: &str, condition: &str) -> anyhow::Result<()> {
    if let Err(error) = page.wait_for(condition, WAIT).await {
        let state = page_state(page).await;
        return Err(error.context(format!("waiting for {what}; the page shows {state}")));
    }
    Ok(())
}

/// A tab on the chat page of `server`, at `width` × `height`.
async fn open_chat(
    browser: &Browser,
    server: &TestServer,
    width: u32,
    height: u32,
) -> anyhow::Result<Page> {
    let page = browser.new_page().await?;
    page.set_viewport(width, height, 1.0).await?;
    page.add_init_script(ERROR_TRAP).await?;
    page.navigate(&format!("http://{}/chat", server.api_addr()))
        .await?;
    wait_for(
        &page,
        "the login form",
        "document.body.dataset.view === 'login'",
    )
    .await?;
    Ok(page)
}

/// Sets an input's value as typing would (an `input` event follows).
async fn fill(page: &Page, id: &str, value: &str) -> anyhow::Result<()> {
    page.eval(&format!(
        "(() => {{ const el = document.getElementById({}); el.focus(); el.value = {}; \
         el.dispatchEvent(new Event('input', {{bubbles: true}})); }})()",
        js(id),
        js(value)
    ))
    .await?;
    Ok(())
}

async fn focus(page: &Page, id: &str) -> anyhow::Result<()> {
    page.eval(&format!("document.getElementById({}).focus()", js(id)))
        .await?;
    Ok(())
}

/// Signs in with the development form as `appcode:uid` and waits until connected.
async fn sign_in(page: &Page, appcode: u32, uid: &str) -> anyhow::Result<()> {
    fill(page, "login-appcode", &appcode.to_string()).await?;
    fill(page, "login-uid", uid).await?;
    // Enter in the uid field submits the form, as for a person.
    page.press_key("Enter", 0).await?;
    wait_for(
        page,
        &format!("{appcode}:{uid} signed in and connected"),
        &format!(
            "document.body.dataset.view === 'chat' && document.body.dataset.state === 'connected' \
             && document.getElementById('me-name').textContent === {}",
            js(&format!("{appcode}:{uid}"))
        ),
    )
    .await
}

/// Starts (or reopens) the conversation with `peer` ("130:bob") from the new-chat field.
async fn start_conversation(page: &Page, peer: &str) -> anyhow::Result<()> {
    focus(page, "new-peer").await?;
    page.insert_text(peer).await?;
    page.press_key("Enter", 0).await?;
    wait_for(
        page,
        &format!("the conversation with {peer} open"),
        &format!(
            "!document.getElementById('conv').hidden && location.hash === {} \
             && document.activeElement === document.getElementById('composer-input')",
            js(&format!("#with={}", peer.replace(':', "%3A")))
        ),
    )
    .await
}

/// Clicks the conversation with `peer` in the list.
async fn click_conversation(page: &Page, peer: &str) -> anyhow::Result<()> {
    wait_for(
        page,
        &format!("{peer} in the conversation list"),
        &format!(
            "document.querySelector('#conversations li[data-peer={}] button') !== null",
            js(peer)
        ),
    )
    .await?;
    page.eval(&format!(
        "document.querySelector('#conversations li[data-peer={}] button').click()",
        js(peer)
    ))
    .await?;
    Ok(())
}

/// Types `text` into the composer and presses Enter.
async fn send(page: &Page, text: &str) -> anyhow::Result<()> {
    focus(page, "composer-input").await?;
    page.insert_text(text).await?;
    page.press_key("Enter", 0).await
}

/// JavaScript: the `li.msg` elements (mine or theirs) whose text is exactly `text`.
fn messages_with(side: &str, text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#messages li.msg.{side}')].filter(li => li.querySelector('.content').textContent === {})",
        js(text)
    )
}

/// The texts of the open conversation, oldest first, with their msgids.
async fn shown_messages(page: &Page) -> anyhow::Result<Vec<(String, String)>> {
    let value = page
        .eval(
            "[...document.querySelectorAll('#messages li.msg')].map(li => \
             [li.dataset.msgid || '', li.querySelector('.content').textContent])",
        )
        .await?;
    let rows = value.as_array().context("not an array")?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                row[0].as_str().unwrap_or_default().to_owned(),
                row[1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

async fn no_page_errors(page: &Page) -> anyhow::Result<()> {
    let errors = page.eval("window.__errors").await?;
    anyhow::ensure!(
        errors.as_array().is_some_and(Vec::is_empty),
        "the page logged errors: {errors}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_chat_with_states_typing_and_rich_content() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let browser = Browser::launch().await?;
    let alice = open_chat(&browser, &server, 1200, 800).await?;
    let bob = open_chat(&browser, &server, 1200, 800).await?;
    sign_in(&alice, 129, "alice").await?;
    sign_in(&bob, 130, "bob").await?;

    // Every status alice's own messages pass through, in order.
    alice
        .eval(
            "window.__statuses = []; new MutationObserver(records => { for (const r of records) { \
             const li = r.target; if (li.classList && li.classList.contains('mine')) \
             window.__statuses.push(li.dataset.status); } }).observe(document.getElementById('messages'), \
             {subtree: true, attributes: true, attributeFilter: ['data-status']})",
        )
        .await?;
    start_conversation(&alice, "130:bob").await?;
    send(&alice, "hello bob").await?;
    wait_for(
        &alice,
        "alice's message sent, then delivered to bob's page",
        &format!(
            "{} .length === 1 && ['delivered', 'read'].includes({}[0].dataset.status)",
            messages_with("mine", "hello bob"),
            messages_with("mine", "hello bob")
        ),
    )
    .await?;
    let statuses = alice.eval("window.__statuses").await?;
    let statuses: Vec<&str> = statuses
        .as_array()
        .context("statuses")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let at = |s: &str| statuses.iter().position(|x| *x == s);
    assert!(
        matches!((at("pending"), at("sent"), at("delivered")), (Some(p), Some(s), Some(d)) if p < s && s < d),
        "alice's message went {statuses:?}, not pending → sent → delivered"
    );
    // The composer is empty again and keeps the focus.
    assert_eq!(
        alice
            .eval("document.getElementById('composer-input').value")
            .await?,
        ""
    );

    // Bob's list shows alice with one unread message; opening it shows the message and clears
    // the count.
    wait_for(
        &bob,
        "alice in bob's list with 1 unread",
        "(() => { const li = document.querySelector(\"#conversations li[data-peer='129:alice']\"); \
         return li !== null && li.dataset.unread === '1' && li.querySelector('.badge').textContent === '1' \
         && li.querySelector('.conv-preview').textContent === 'hello bob'; })()",
    )
    .await?;
    click_conversation(&bob, "129:alice").await?;
    wait_for(
        &bob,
        "the message in bob's conversation, unread cleared",
        &format!(
            "{}.length === 1 && document.querySelector(\"#conversations li[data-peer='129:alice']\").dataset.unread === '0' \
             && document.querySelector(\"#conversations li[data-peer='129:alice'] .badge\").hidden",
            messages_with("theirs", "hello bob")
        ),
    )
    .await?;
    // Bob read it: alice's message turns "read" (READ receipt) — on a server with read marks.
    wait_for(
        &alice,
        "alice's message marked read",
        &format!(
            "{}[0].dataset.status === 'read'",
            messages_with("mine", "hello bob")
        ),
    )
    .await?;

    // Typing: bob types, alice sees it; then Shift+Enter makes a new line and Enter sends.
    focus(&bob, "composer-input").await?;
    bob.insert_text("line one").await?;
    wait_for(
        &alice,
        "bob is typing",
        "document.getElementById('typing').textContent === 'bob is typing…'",
    )
    .await?;
    bob.press_key("Enter", SHIFT).await?;
    bob.insert_text("line two").await?;
    bob.press_key("Enter", 0).await?;
    wait_for(
        &alice,
        "bob's two-line reply, typing gone",
        &format!(
            "{}.length === 1 && document.getElementById('typing').textContent === ''",
            messages_with("theirs", "line one\nline two")
        ),
    )
    .await?;

    // Rich: red, large, with a shake; bob sees styled text and the shake, and his pane shakes.
    bob.eval("window.__shook = false; document.getElementById('conv-pane').addEventListener('animationstart', () => { window.__shook = true; })")
        .await?;
    fill(&alice, "fmt-color", "red").await?;
    fill(&alice, "fmt-size", "18").await?;
    alice
        .eval("document.getElementById('fmt-shake').click()")
        .await?;
    send(&alice, "look <here> & there").await?;
    wait_for(
        &bob,
        "the styled message with a shake",
        "(() => { const li = [...document.querySelectorAll('#messages li.msg.theirs')].at(-1); \
         const font = li && li.querySelector('.rich-font'); \
         return font !== null && font.textContent === 'look <here> & there' && font.style.color === 'red' \
         && font.style.fontSize === '18px' && li.querySelector('.rich-shake') !== null && window.__shook; })()",
    )
    .await?;

    // Markup from someone else is shown, never run: a text message with HTML stays text, a
    // RICH one with a script, a javascript: image and an unknown element shows only text.
    let (mallory, _mallory_in) = server.client(131, "mallory", "phone").await;
    mallory
        .c2c(
            UserRef::new(130, "bob"),
            Content::text("<img src=x onerror=\"window.__pwned=1\">"),
        )
        .await?;
    mallory
        .c2c(
            UserRef::new(130, "bob"),
            Content::Rich(
                "<script>window.__pwned=2</script><img url=\"javascript:window.__pwned=3\" />\
                 <b onclick=\"x\">bold?</b><font\tcolor=\"blue;background:url(x)\" size=\"99\">big</font>"
                    .to_owned(),
            ),
        )
        .await?;
    click_conversation(&bob, "131:mallory").await?;
    wait_for(
        &bob,
        "mallory's two messages rendered as text",
        "(() => { const items = [...document.querySelectorAll('#messages li.msg.theirs')]; \
         if (items.length !== 2) return false; \
         const [a, b] = items.map(li => li.querySelector('.content')); \
         const font = b.querySelector('.rich-font'); \
         return a.textContent === '<img src=x onerror=\"window.__pwned=1\">' && a.children.length === 0 \
         && b.querySelector('img, script, b') === null && b.textContent.includes('window.__pwned=2') \
         && b.textContent.includes('bold?') && font !== null && font.style.color === '' \
         && font.style.fontSize === '32px'; })()",
    )
    .await?;
    assert_eq!(bob.eval("window.__pwned ?? null").await?, Value::Null);

    no_page_errors(&alice).await?;
    no_page_errors(&bob).await?;
    drop(browser);
    server.stop().await;
    Ok(())
}

/// The `longlink` binary: `$LONGLINK_BIN`, else `target/<profile>/longlink` next to this
/// test's own directory (built by `cargo build -p longlink-cli` or any workspace build).
fn longlink_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("LONGLINK_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // target/debug/deps/chat_page-… → target/debug/longlink
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary path")?
        .join("longlink");
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: run `cargo build -p longlink-cli` first (or set LONGLINK_BIN)",
        path.display()
    );
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_chats_with_a_terminal() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let binary = longlink_binary()?;
    let browser = Browser::launch().await?;
    let page = open_chat(&browser, &server, 1200, 800).await?;
    sign_in(&page, 132, "agent").await?;

    // The customer in a terminal: tokens minted from the default config, as the server's.
    let mut cli = tokio::process::Command::new(&binary)
        .args(["client", "chat", "--server"])
        .arg(server.gate_addr().to_string())
        .args(["--appcode", "129", "--uid", "carol", "--to", "132:agent"])
        .env_remove("LONGLINK_CONFIG")
        .env_remove("LONGLINK_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut stdin = cli.stdin.take().context("stdin")?;
    let mut lines = tokio::io::BufReader::new(cli.stdout.take().context("stdout")?).lines();
    let mut seen = Vec::new();
    let mut expect_line = async |needle: &str| -> anyhow::Result<()> {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await? {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return Ok(());
                }
            }
            bail!("the terminal client exited")
        })
        .await;
        match found {
            Ok(result) => result.with_context(|| format!("terminal output so far: {seen:?}")),
            Err(_) => bail!("{needle:?} not printed within {WAIT:?}; terminal output: {seen:?}"),
        }
    };
    expect_line("chatting as 129:carol").await?;

    stdin.write_all(b"my order is late\n").await?;
    stdin.flush().await?;
    click_conversation(&page, "129:carol").await?;
    wait_for(
        &page,
        "the terminal's line in the page",
        &format!(
            "{}.length === 1",
            messages_with("theirs", "my order is late")
        ),
    )
    .await?;

    send(&page, "Sorry! It is 5 minutes away.").await?;
    expect_line("132:agent: Sorry! It is 5 minutes away.").await?;
    wait_for(
        &page,
        "the reply delivered to the terminal",
        &format!(
            "['delivered', 'read'].includes({}[0]?.dataset.status)",
            messages_with("mine", "Sorry! It is 5 minutes away.")
        ),
    )
    .await?;

    drop(stdin); // Ctrl-D: the terminal client says goodbye
    let status = tokio::time::timeout(WAIT, cli.wait()).await??;
    assert!(
        status.success(),
        "longlink client chat exited with {status}"
    );
    no_page_errors(&page).await?;
    drop(browser);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_page_shows_the_same_history_paged_back_on_scroll() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    // 45 messages alice wrote to dave from her phone before opening the page: more than one
    // page of history, and none of them pushed to the page (they are not in alice's inbox).
    let (phone, _phone_in) = server.client(129, "alice", "phone").await;
    for i in 1..=45 {
        phone
            .c2c(
                UserRef::new(130, "dave"),
                Content::text(format!("message {i}")),
            )
            .await?;
    }
    let browser = Browser::launch().await?;
    let page = open_chat(&browser, &server, 1200, 700).await?;
    sign_in(&page, 129, "alice").await?;
    start_conversation(&page, "130:dave").await?;
    wait_for(
        &page,
        "the newest page, scrolled to the bottom",
        "(() => { const s = document.getElementById('scroller'); \
         const items = document.querySelectorAll('#messages li.msg'); \
         return items.length >= 30 && items.length < 45 \
         && items[items.length - 1].querySelector('.content').textContent === 'message 45' \
         && s.scrollHeight - s.scrollTop - s.clientHeight < 5; })()",
    )
    .await?;
    // Scrolling up loads the rest, down to the first message.
    page.eval("document.getElementById('scroller').scrollTop = 0")
        .await?;
    wait_for(
        &page,
        "every message after scrolling up",
        "document.querySelectorAll('#messages li.msg').length === 45 \
         && document.querySelector('#messages li.msg .content').textContent === 'message 1' \
         && document.getElementById('history-status').dataset.complete === 'true'",
    )
    .await?;
    send(&page, "thanks, all read").await?;
    wait_for(
        &page,
        "alice's reply stored",
        &format!(
            "{}[0]?.dataset.msgid !== undefined",
            messages_with("mine", "thanks, all read")
        ),
    )
    .await?;
    let before = shown_messages(&page).await?;
    assert_eq!(before.len(), 46);

    page.reload().await?;
    // Signed in again by itself (this tab's login), the same conversation open (the URL).
    wait_for(
        &page,
        "signed in again after the reload, conversation open",
        "document.body.dataset.view === 'chat' && document.body.dataset.state === 'connected' \
         && !document.getElementById('conv').hidden \
         && document.getElementById('peer-name').textContent === 'dave · 130' \
         && document.querySelectorAll('#messages li.msg').length >= 30",
    )
    .await?;
    page.eval("document.getElementById('scroller').scrollTop = 0")
        .await?;
    wait_for(
        &page,
        "the whole history again",
        "document.querySelectorAll('#messages li.msg').length === 46 \
         && document.getElementById('history-status').dataset.complete === 'true'",
    )
    .await?;
    let after = shown_messages(&page).await?;
    assert_eq!(after, before, "the history after the reload differs");
    no_page_errors(&page).await?;
    drop(browser);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reconnects_and_gets_what_was_sent_meanwhile_once() -> anyhow::Result<()> {
    let mut server = TestServer::start().await;
    let browser = Browser::launch().await?;
    let page = open_chat(&browser, &server, 1200, 800).await?;
    sign_in(&page, 129, "alice").await?;
    start_conversation(&page, "130:erin").await?;
    send(&page, "are you there?").await?;
    wait_for(
        &page,
        "the first message stored",
        &format!(
            "{}[0]?.dataset.msgid !== undefined",
            messages_with("mine", "are you there?")
        ),
    )
    .await?;

    // The page loses the network and the server restarts: the page says so and keeps trying.
    page.set_offline(true).await?;
    server.restart().await;
    wait_for(
        &page,
        "the reconnecting state",
        "document.body.dataset.state === 'reconnecting' \
         && document.getElementById('conn-text').textContent === 'Reconnecting…' \
         && !document.getElementById('banner').hidden",
    )
    .await?;
    // While alice is away, erin writes: stored for her.
    let (erin, _erin_in) = server.client(130, "erin", "phone").await;
    erin.c2c(
        UserRef::new(129, "alice"),
        Content::text("yes, sent while you were away"),
    )
    .await?;

    page.set_offline(false).await?;
    wait_for(
        &page,
        "connected again, banner gone",
        "document.body.dataset.state === 'connected' && document.getElementById('banner').hidden",
    )
    .await?;
    wait_for(
        &page,
        "the message sent meanwhile",
        &format!(
            "{}.length === 1",
            messages_with("theirs", "yes, sent while you were away")
        ),
    )
    .await?;
    // One more live message, so every catch-up of the reconnect has run; still exactly one copy.
    erin.c2c(UserRef::new(129, "alice"), Content::text("and now live"))
        .await?;
    wait_for(
        &page,
        "the live message",
        &format!("{}.length === 1", messages_with("theirs", "and now live")),
    )
    .await?;
    assert_eq!(
        page.eval(&format!(
            "{}.length",
            messages_with("theirs", "yes, sent while you were away")
        ))
        .await?,
        Value::from(1),
        "the message sent while away is shown more than once"
    );
    // And alice can still write.
    send(&page, "back!").await?;
    wait_for(
        &page,
        "a message after the reconnect stored",
        &format!(
            "{}[0]?.dataset.msgid !== undefined",
            messages_with("mine", "back!")
        ),
    )
    .await?;
    no_page_errors(&page).await?;
    drop(browser);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_oversized_messages_are_explained() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let browser = Browser::launch().await?;
    let page = open_chat(&browser, &server, 1200, 800).await?;

    // A token that is not one: the login form says BAD_TOKEN and stays.
    page.eval("document.getElementById('login-token-box').open = true")
        .await?;
    fill(&page, "login-appcode", "129").await?;
    fill(&page, "login-token", "this-is-not-a-token").await?;
    page.eval("document.getElementById('login-submit').click()")
        .await?;
    wait_for(
        &page,
        "BAD_TOKEN on the login form",
        "document.body.dataset.view === 'login' && !document.getElementById('login-error').hidden \
         && document.getElementById('login-error').textContent.startsWith('BAD_TOKEN: ') \
         && !document.getElementById('login-submit').disabled",
    )
    .await?;
    // A user id that cannot be: refused by the server's development login, said on the form.
    fill(&page, "login-token", "").await?;
    fill(&page, "login-uid", &"u".repeat(129)).await?;
    page.eval("document.getElementById('login-submit').click()")
        .await?;
    wait_for(
        &page,
        "the uid's limit on the login form",
        "document.getElementById('login-error').textContent.includes('128 bytes')",
    )
    .await?;

    sign_in(&page, 129, "alice").await?;
    start_conversation(&page, "130:bob").await?;
    // One byte over the limit of /chat/config.json: refused before sending, text kept.
    let config: Value = reqwest::get(format!("http://{}/chat/config.json", server.api_addr()))
        .await?
        .json()
        .await?;
    let limit = config["max_content_bytes"]
        .as_u64()
        .context("max_content_bytes")?;
    assert_eq!(limit, 61_440);
    let long = "é".repeat(usize::try_from(limit / 2)?) + "x";
    fill(&page, "composer-input", &long).await?;
    wait_for(
        &page,
        "the byte counter over the limit",
        "document.getElementById('composer-count').classList.contains('over')",
    )
    .await?;
    page.press_key("Enter", 0).await?;
    wait_for(
        &page,
        "BODY_TOO_LARGE under the composer",
        "!document.getElementById('composer-error').hidden \
         && document.getElementById('composer-error').textContent.startsWith('BODY_TOO_LARGE: this message is 61,441 bytes; the limit is 61,440 bytes')",
    )
    .await?;
    assert_eq!(
        page.eval("document.querySelectorAll('#messages li.msg').length")
            .await?,
        Value::from(0),
        "an oversized message was put on screen"
    );
    assert_eq!(
        page.eval("document.getElementById('composer-input').value.length")
            .await?,
        Value::from(limit / 2 + 1),
        "the text was not kept for editing"
    );
    // Esc dismisses the error; exactly at the limit is accepted.
    page.press_key("Escape", 0).await?;
    wait_for(
        &page,
        "the error dismissed",
        "document.getElementById('composer-error').hidden",
    )
    .await?;
    fill(
        &page,
        "composer-input",
        &"é".repeat(usize::try_from(limit / 2)?),
    )
    .await?;
    page.press_key("Enter", 0).await?;
    wait_for(
        &page,
        "a message of exactly the limit stored",
        "document.querySelector('#messages li.msg.mine')?.dataset.msgid !== undefined",
    )
    .await?;
    // A malformed peer in the new-chat field.
    focus(&page, "new-peer").await?;
    page.insert_text("bob").await?;
    page.press_key("Enter", 0).await?;
    wait_for(
        &page,
        "the new-chat format explained",
        "document.getElementById('new-error').textContent.startsWith('Enter the other user as appcode:uid')",
    )
    .await?;
    no_page_errors(&page).await?;
    drop(browser);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrow_screens_show_the_list_or_the_conversation() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let (frank, _frank_in) = server.client(130, "frank", "phone").await;
    frank
        .c2c(
            UserRef::new(131, "shop"),
            Content::text("is the cake ready?"),
        )
        .await?;
    let browser = Browser::launch().await?;
    let page = open_chat(&browser, &server, 390, 760).await?;
    sign_in(&page, 131, "shop").await?;
    let visible = |id: &str| format!("document.getElementById('{id}').getClientRects().length > 0");
    wait_for(
        &page,
        "the list alone",
        &format!("{} && !{}", visible("list-pane"), visible("conv-pane")),
    )
    .await?;
    click_conversation(&page, "130:frank").await?;
    wait_for(
        &page,
        "the conversation alone, with a back button",
        &format!(
            "{} && !{} && {} && {}.length === 1",
            visible("conv-pane"),
            visible("list-pane"),
            visible("back"),
            messages_with("theirs", "is the cake ready?")
        ),
    )
    .await?;
    // Esc goes back to the list, focus on the conversation just left; arrows move in the list.
    page.press_key("Escape", 0).await?;
    wait_for(
        &page,
        "the list again, focus on frank",
        &format!(
            "{} && !{} && document.activeElement === document.querySelector(\"#conversations li[data-peer='130:frank'] button\")",
            visible("list-pane"),
            visible("conv-pane")
        ),
    )
    .await?;
    page.press_key("Enter", 0).await?;
    wait_for(&page, "reopened with Enter", &visible("conv-pane")).await?;
    no_page_errors(&page).await?;
    drop(browser);
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_and_dev_login_follow_the_config() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let ws = server.server().ws_addr().context("ws listener")?;
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.api_addr());

    let page = http.get(format!("{base}/chat")).send().await?;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()?
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        csp.contains(&format!("connect-src 'self' ws://{ws}")),
        "{csp}"
    );
    assert!(page.text().await?.contains("/chat/chat.js"));
    for (file, mime) in [
        ("chat.js", "text/javascript; charset=utf-8"),
        ("chat.css", "text/css; charset=utf-8"),
    ] {
        let asset = http.get(format!("{base}/chat/{file}")).send().await?;
        assert_eq!(asset.status(), 200, "{file}");
        assert_eq!(asset.headers()["content-type"], mime, "{file}");
    }
    assert_eq!(
        http.get(format!("{base}/chat/nope.js"))
            .send()
            .await?
            .status(),
        404
    );

    let config: Value = http
        .get(format!("{base}/chat/config.json"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(config["ws_url"], format!("ws://{ws}"));
    assert_eq!(config["dev_login"], true);
    assert_eq!(config["appcodes"], serde_json::json!([129, 130, 131, 132]));
    assert_eq!(config["max_body_bytes"], 65_536);

    // The minted token logs in (an SDK client over TCP).
    let minted: Value = http
        .post(format!("{base}/chat/dev-token"))
        .json(&serde_json::json!({"appcode": 130, "uid": "gina"}))
        .send()
        .await?
        .json()
        .await?;
    let token = minted["token"].as_str().context("token")?;
    let mut config = server.client_config(130, "someone-else", "phone");
    config.token = token.to_owned();
    let (client, _incoming) = longlink_sdk::Client::connect(config).await?;
    assert_eq!(client.uid(), "gina");
    for (body, status) in [
        (serde_json::json!({"appcode": 7, "uid": "gina"}), 400),
        (serde_json::json!({"appcode": 130, "uid": ""}), 400),
        (serde_json::json!({"appcode": 130}), 400),
    ] {
        let answer = http
            .post(format!("{base}/chat/dev-token"))
            .json(&body)
            .send()
            .await?;
        assert_eq!(answer.status(), status, "{body}");
    }
    // A form post (no JSON) is refused: no cross-site minting.
    let form = http
        .post(format!("{base}/chat/dev-token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("appcode=130&uid=gina")
        .send()
        .await?;
    assert_eq!(form.status(), 415);
    server.stop().await;

    // Development logins off, WebSocket off: the page is told, the token route is gone.
    let server = TestServer::start_with(|config| {
        config.api.chat_dev_login = false;
        config.gate.ws_listen = None;
    })
    .await;
    let base = format!("http://{}", server.api_addr());
    let config: Value = http
        .get(format!("{base}/chat/config.json"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(config["dev_login"], false);
    assert_eq!(config["ws_url"], Value::Null);
    let answer = http
        .post(format!("{base}/chat/dev-token"))
        .json(&serde_json::json!({"appcode": 130, "uid": "gina"}))
        .send()
        .await?;
    assert_eq!(answer.status(), 404);
    let body: Value = answer.json().await?;
    assert_eq!(body["error"]["code"], "not_found");
    server.stop().await;
    Ok(())
}

/// Where test artifacts go: `target/test-artifacts/` (next to this test's profile directory).
fn artifacts_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(|deps| deps.parent())
        .and_then(|profile| profile.parent())
        .context("test binary path")?;
    Ok(target.join("test-artifacts"))
}

/// A small local picture for the RICH image in the screenshot (the test has no internet).
async fn serve_picture() -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    const SVG: &str = "<svg xmlns='http://www.w3.org/2000/svg' width='320' height='180' viewBox='0 0 320 180'>\
        <defs><linearGradient id='g' x1='0' y1='0' x2='1' y2='1'><stop offset='0' stop-color='#ffd8a8'/>\
        <stop offset='1' stop-color='#fa5252'/></linearGradient></defs>\
        <rect width='320' height='180' fill='url(#g)'/>\
        <circle cx='250' cy='52' r='26' fill='#fff3bf'/>\
        <path d='M0 150 L90 80 L160 140 L220 100 L320 160 L320 180 L0 180Z' fill='#862e9c' opacity='0.75'/>\
        <text x='20' y='40' font-family='sans-serif' font-size='22' fill='#fff' font-weight='bold'>Order #1042</text>\
        </svg>";
    let app = axum::Router::new().route(
        "/order.svg",
        axum::routing::get(|| async { ([("content-type", "image/svg+xml")], SVG) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshot_of_a_support_agents_day() -> anyhow::Result<()> {
    let server = TestServer::start().await;
    let (picture, picture_task) = serve_picture().await?;
    let agent = UserRef::new(132, "agent-anna");
    // Three customers and a merchant wrote to the agent; one conversation is under way.
    let (maria, mut maria_in) = server.client(129, "maria.lopez", "phone").await;
    let (tom, _tom_in) = server.client(129, "tom", "phone").await;
    let (bakery, _bakery_in) = server.client(131, "sunrise-bakery", "tablet").await;
    let (kenji, _kenji_in) = server.client(129, "kenji", "phone").await;
    bakery
        .c2c(
            agent.clone(),
            Content::text("Our card reader is offline again, can you check?"),
        )
        .await?;
    kenji
        .c2c(agent.clone(), Content::text("Thanks, all sorted!"))
        .await?;
    tom.c2c(agent.clone(), Content::text("Hi, where is my driver?"))
        .await?;
    tom.c2c(agent.clone(), Content::text("It has been 40 minutes"))
        .await?;
    tom.c2c(agent.clone(), Content::text("Hello??")).await?;
    maria
        .c2c(
            agent.clone(),
            Content::text("Hi! My order #1042 arrived but the cake is the wrong one."),
        )
        .await?;
    maria
        .c2c(
            agent.clone(),
            Content::Rich(format!(
                "<font size=\"14\">This is what came:</font><img url=\"http://{picture}/order.svg\" />"
            )),
        )
        .await?;

    let browser = Browser::launch().await?;
    let page = open_chat(&browser, &server, 1280, 800).await?;
    let dir = artifacts_dir()?;
    fill(&page, "login-appcode", "132").await?;
    fill(&page, "login-uid", "agent-anna").await?;
    page.screenshot_png(&dir.join("chat-login.png")).await?;
    sign_in(&page, 132, "agent-anna").await?;
    click_conversation(&page, "129:maria.lopez").await?;
    wait_for(
        &page,
        "maria's picture loaded",
        "(() => { const img = document.querySelector('#messages .rich-img img'); \
         return img !== null && img.complete && img.naturalWidth === 320; })()",
    )
    .await?;
    // Maria's phone takes (and so acknowledges) whatever arrives.
    let maria_reader = tokio::spawn(async move { while maria_in.next_event().await.is_some() {} });
    send(
        &page,
        "I'm so sorry about that, Maria! Let me fix it right away.",
    )
    .await?;
    fill(&page, "fmt-color", "#1c7ed6").await?;
    send(
        &page,
        "A new cake is on its way, free of charge — about 30 minutes.",
    )
    .await?;
    wait_for(
        &page,
        "both replies delivered",
        "[...document.querySelectorAll('#messages li.msg.mine')].length === 2 \
         && [...document.querySelectorAll('#messages li.msg.mine')].every(li => ['delivered', 'read'].includes(li.dataset.status))",
    )
    .await?;
    maria
        .c2c(
            agent.clone(),
            Content::Rich("<font color=\"green\">Wonderful, thank you!</font><shake />".to_owned()),
        )
        .await?;
    maria.c2c(agent.clone(), Content::Typing).await?;
    wait_for(
        &page,
        "maria's thanks and typing, unread counts on the others",
        "document.querySelectorAll('#messages li.msg').length === 5 \
         && document.getElementById('typing').textContent === 'maria.lopez is typing…' \
         && document.querySelector(\"#conversations li[data-peer='129:tom']\").dataset.unread === '3'",
    )
    .await?;
    focus(&page, "composer-input").await?;
    page.insert_text("Enjoy your evening").await?;
    // The shake animation has finished before the picture is taken.
    page.wait_for(
        "!document.getElementById('conv-pane').classList.contains('shaking')",
        WAIT,
    )
    .await?;
    page.screenshot_png(&dir.join("chat.png")).await?;

    // The same on a phone: the conversation alone.
    page.set_viewport(390, 760, 2.0).await?;
    page.wait_for(
        "document.getElementById('list-pane').getClientRects().length === 0",
        WAIT,
    )
    .await?;
    page.screenshot_png(&dir.join("chat-narrow.png")).await?;
    println!("wrote {}", dir.join("chat.png").display());
    no_page_errors(&page).await?;
    drop(browser);
    picture_task.abort();
    maria_reader.abort();
    server.stop().await;
    Ok(())
}
