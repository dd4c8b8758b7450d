//! A small Chrome DevTools Protocol client for browser tests: [`Browser::launch`] starts a
//! headless Chromium with a throwaway profile (killed, with every process it started, when the
//! [`Browser`] is dropped), [`Browser::new_page`] opens a tab, and a [`Page`] navigates,
//! evaluates JavaScript, waits for a condition with a deadline, types and presses keys, goes
//! offline and takes screenshots.
//!
//! Only what the tests need of CDP: one websocket to the browser, sessions attached with
//! `flatten: true`, requests matched to responses by id; events are ignored. Every call has a
//! deadline ([`WAIT`]).
//!
//! Chromium is looked up as `$LONGLINK_CHROMIUM`, else `chromium` on the `PATH`; when it is
//! missing, [`Browser::launch`] fails with a message that says to run `scripts/test` (which
//! installs it).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::WAIT;

/// The environment variable that names the Chromium binary to use instead of `chromium`.
pub const CHROMIUM_ENV: &str = "LONGLINK_CHROMIUM";

/// How many of Chromium's last stderr lines are kept for error messages.
const LOG_LINES: usize = 200;

type Reply = Result<Value, String>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// The Chromium binary: `$LONGLINK_CHROMIUM`, else `chromium` found on the `PATH`.
///
/// # Errors
/// Neither is there; the message says how to install Chromium.
pub fn find_chromium() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(CHROMIUM_ENV).filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "{CHROMIUM_ENV}={} is not a file; unset it or point it at a Chromium binary",
            path.display()
        );
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
        .context(
            "chromium is not installed (no `chromium` on the PATH): the browser tests need it; \
             run scripts/test, which installs it (apt-get install chromium), \
             or set LONGLINK_CHROMIUM to a Chromium binary",
        )
}

/// One websocket to the browser: requests go out through a writer task, responses come back
/// through a reader task that completes the caller's oneshot by id.
#[derive(Debug)]
struct Connection {
    next_id: AtomicU64,
    pending: Pending,
    outgoing: mpsc::UnboundedSender<Message>,
    tasks: [JoinHandle<()>; 2],
}

impl Connection {
    async fn connect(url: &str) -> anyhow::Result<Connection> {
        let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .context("connecting to chromium's DevTools websocket timed out")?
            .context("connecting to chromium's DevTools websocket")?;
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        let writer = tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let replies = Arc::clone(&pending);
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                // Events have no id; only responses are of interest.
                let Some(id) = value.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                let waiter = replies
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                if let Some(waiter) = waiter {
                    let reply = match value.get("error") {
                        Some(error) => Err(error.to_string()),
                        None => Ok(value.get("result").cloned().unwrap_or(Value::Null)),
                    };
                    let _ = waiter.send(reply);
                }
            }
            // The browser went away: every caller still waiting learns it now.
            replies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        });
        Ok(Connection {
            next_id: AtomicU64::new(1),
            pending,
            outgoing,
            tasks: [writer, reader],
        })
    }

    /// Sends `method` with `params` (to the page `session`, or to the browser) and waits at
    /// most [`WAIT`] for its result.
    async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        let mut request = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            request["sessionId"] = Value::from(session);
        }
        if self
            .outgoing
            .send(Message::text(request.to_string()))
            .is_err()
        {
            bail!("{method}: the connection to chromium is closed");
        }
        match tokio::time::timeout(WAIT, rx).await {
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                bail!("{method}: chromium did not answer within {WAIT:?}")
            }
            Ok(Err(_)) => bail!("{method}: the connection to chromium closed"),
            Ok(Ok(Err(error))) => bail!("{method} failed: {error}"),
            Ok(Ok(Ok(result))) => Ok(result),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A headless Chromium driven over the DevTools protocol. Dropping it kills the browser and
/// every process it started (they share a process group) and deletes its profile.
#[derive(Debug)]
pub struct Browser {
    child: tokio::process::Child,
    connection: Arc<Connection>,
    log: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromium --headless` (see [`find_chromium`]) with a fresh profile and a free
    /// DevTools port, and connects to it; waits at most [`WAIT`].
    ///
    /// # Errors
    /// Chromium is not installed, did not start, or its DevTools endpoint did not answer.
    pub async fn launch() -> anyhow::Result<Browser> {
        let binary = find_chromium()?;
        let profile = tempfile::tempdir().context("temp dir for the chromium profile")?;
        let mut child = tokio::process::Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--mute-audio",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so that drop can kill the renderers and helpers too.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().context("chromium's stderr")?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await? {
                let url = line
                    .split_once("DevTools listening on ")
                    .map(|(_, url)| url.trim().to_owned());
                push_line(&log, line);
                if let Some(url) = url {
                    return Ok(url);
                }
            }
            bail!("chromium exited before it listened for DevTools")
        })
        .await;
        let ws_url = match found {
            Ok(Ok(url)) => url,
            Ok(Err(error)) => bail!("{error}; its stderr:\n{}", tail(&log)),
            Err(_) => bail!(
                "chromium did not print its DevTools URL within {WAIT:?}; its stderr:\n{}",
                tail(&log)
            ),
        };
        // Keep draining stderr so chromium never blocks on a full pipe.
        let drain = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                push_line(&drain, line);
            }
        });
        let connection = Connection::connect(&ws_url).await?;
        Ok(Browser {
            child,
            connection: Arc::new(connection),
            log,
            _profile: profile,
        })
    }

    /// Opens a new tab on `about:blank` and attaches to it.
    ///
    /// # Errors
    /// A CDP call failed.
    pub async fn new_page(&self) -> anyhow::Result<Page> {
        let created = self
            .connection
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target = created["targetId"]
            .as_str()
            .context("Target.createTarget: no targetId")?
            .to_owned();
        let attached = self
            .connection
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .context("Target.attachToTarget: no sessionId")?
            .to_owned();
        Ok(Page {
            connection: Arc::clone(&self.connection),
            session,
            target,
        })
    }

    /// The browser's version string (`Browser.getVersion`'s `product`).
    ///
    /// # Errors
    /// A CDP call failed.
    pub async fn version(&self) -> anyhow::Result<String> {
        let version = self
            .connection
            .call(None, "Browser.getVersion", json!({}))
            .await?;
        Ok(version["product"].as_str().unwrap_or_default().to_owned())
    }

    /// The last lines chromium wrote to stderr, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The child has not been reaped (nothing waits on it), so its pid is still its own
        // and names the process group it leads.
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok())
            && pid > 1
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.start_kill();
    }
}

fn push_line(log: &Mutex<Vec<String>>, line: String) {
    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
    if log.len() >= LOG_LINES {
        log.remove(0);
    }
    log.push(line);
}

fn tail(log: &Mutex<Vec<String>>) -> String {
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .join("\n")
}

/// One tab of a [`Browser`]. It stays usable only while the browser lives.
#[derive(Debug)]
pub struct Page {
    connection: Arc<Connection>,
    session: String,
    target: String,
}

impl Page {
    async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.connection
            .call(Some(&self.session), method, params)
            .await
    }

    /// Navigates to `url` and waits (at most [`WAIT`]) until the new document has loaded
    /// (`document.readyState == "complete"`).
    ///
    /// # Errors
    /// The navigation failed (e.g. connection refused) or did not finish in time.
    pub async fn navigate(&self, url: &str) -> anyhow::Result<()> {
        // A mark on the current document: gone once the new one has replaced it.
        self.eval("window.__longlinkOldDocument = true").await?;
        let result = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(error) = result.get("errorText").and_then(Value::as_str)
            && !error.is_empty()
        {
            bail!("navigating to {url}: {error}");
        }
        self.wait_for(
            "!window.__longlinkOldDocument && document.readyState === 'complete'",
            WAIT,
        )
        .await
        .with_context(|| format!("loading {url}"))
    }

    /// Evaluates `js` in the page (promises are awaited) and returns its value as JSON
    /// (`Null` for `undefined`).
    ///
    /// # Errors
    /// The CDP call failed or the script threw; the message holds the exception.
    pub async fn eval(&self, js: &str) -> anyhow::Result<Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(details) = result.get("exceptionDetails") {
            let message = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("exception");
            bail!("evaluating `{js}` threw: {message}");
        }
        Ok(result["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// The value of `js` as a string (`Null` becomes an error).
    ///
    /// # Errors
    /// As [`Page::eval`], or the value is not a string.
    pub async fn eval_string(&self, js: &str) -> anyhow::Result<String> {
        match self.eval(js).await? {
            Value::String(text) => Ok(text),
            other => bail!("`{js}` is {other}, not a string"),
        }
    }

    /// Polls `js` until it evaluates to `true`, at most `deadline`; never a fixed sleep.
    ///
    /// # Errors
    /// The condition did not hold in time; the message holds its last value or error.
    pub async fn wait_for(&self, js: &str, deadline: Duration) -> anyhow::Result<()> {
        let end = tokio::time::Instant::now() + deadline;
        let mut pause = Duration::from_millis(10);
        loop {
            let last = match self.eval(js).await {
                Ok(Value::Bool(true)) => return Ok(()),
                Ok(value) => value.to_string(),
                Err(error) => format!("{error:#}"),
            };
            if tokio::time::Instant::now() >= end {
                bail!("`{js}` was not true within {deadline:?}; last: {last}");
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Sets the viewport to `width` × `height` CSS pixels at `scale` device pixels each.
    ///
    /// # Errors
    /// A CDP call failed.
    pub async fn set_viewport(&self, width: u32, height: u32, scale: f64) -> anyhow::Result<()> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": scale, "mobile": false}),
        )
        .await?;
        Ok(())
    }

    /// Emulates `prefers-color-scheme: scheme` ("dark" or "light").
    ///
    /// # Errors
    /// A CDP call failed.
    pub async fn set_color_scheme(&self, scheme: &str) -> anyhow::Result<()> {
        self.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        )
        .await?;
        Ok(())
    }

    /// Captures the viewport as a PNG into `path` (creating its directory).
    ///
    /// # Errors
    /// A CDP call failed or the file could not be written.
    pub async fn screenshot_png(&self, path: &Path) -> anyhow::Result<()> {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        let data = shot["data"]
            .as_str()
            .context("Page.captureScreenshot: no data")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .context("Page.captureScreenshot: data is not base64")?;
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Reloads the page and waits (at most [`WAIT`]) until the new document has loaded.
    ///
    /// # Errors
    /// The reload failed or did not finish in time.
    pub async fn reload(&self) -> anyhow::Result<()> {
        self.eval("window.__longlinkOldDocument = true").await?;
        self.call("Page.reload", json!({"ignoreCache": true}))
            .await?;
        self.wait_for(
            "!window.__longlinkOldDocument && document.readyState === 'complete'",
            WAIT,
        )
        .await
        .context("reloading")
    }

    /// Runs `js` in every document this tab loads from now on, before the page's own scripts
    /// (e.g. to collect errors into a global the test reads). It runs even under a strict
    /// Content-Security-Policy.
    ///
    /// # Errors
    /// A CDP call failed.
    pub async fn add_init_script(&self, js: &str) -> anyhow::Result<()> {
        self.call("Page.enable", json!({})).await?;
        self.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": js}),
        )
        .await?;
        Ok(())
    }

    /// Types `text` into the focused element as if it came from the keyboard (one `input`
    /// event, like an IME commit; no key events).
    ///
    /// # Errors
    /// A CDP call failed.
    pub async fn insert_text(&self, text: &str) -> anyhow::Result<()> {
        self.call("Input.insertText", json!({"text": text})).await?;
        Ok(())
    }

    /// Presses and releases one key on the focused element: `key` is a DOM key name
    /// ("Enter", "Escape", "Tab", "ArrowDown"…, or one character) and `modifiers` the CDP bit
    /// set (1 Alt, 2 Ctrl, 4 Meta, 8 Shift). Enter and characters insert their text like a
    /// real key press would.
    ///
    /// # Errors
    /// The key is unknown to this helper, or a CDP call failed.
    pub async fn press_key(&self, key: &str, modifiers: u32) -> anyhow::Result<()> {
        let (code, key_code, text) = match key {
            "Enter" => ("Enter".to_owned(), 13, "\r".to_owned()),
            "Escape" => ("Escape".to_owned(), 27, String::new()),
            "Tab" => ("Tab".to_owned(), 9, String::new()),
            "Backspace" => ("Backspace".to_owned(), 8, String::new()),
            "ArrowUp" => ("ArrowUp".to_owned(), 38, String::new()),
            "ArrowDown" => ("ArrowDown".to_owned(), 40, String::new()),
            "Home" => ("Home".to_owned(), 36, String::new()),
            "End" => ("End".to_owned(), 35, String::new()),
            one if one.chars().count() == 1 => {
                let c = one.chars().next().unwrap_or(' ');
                let upper = c.to_ascii_uppercase();
                let code = if c.is_ascii_alphabetic() {
                    format!("Key{upper}")
                } else if c.is_ascii_digit() {
                    format!("Digit{c}")
                } else {
                    String::new()
                };
                (code, u32::from(upper), one.to_owned())
            }
            other => bail!("press_key: no key code for {other:?}"),
        };
        let mut down = json!({
            "type": if text.is_empty() { "rawKeyDown" } else { "keyDown" },
            "key": key,
            "code": code,
            "windowsVirtualKeyCode": key_code,
            "nativeVirtualKeyCode": key_code,
            "modifiers": modifiers,
        });
        if !text.is_empty() {
            down["text"] = Value::from(text.clone());
            down["unmodifiedText"] = Value::from(text);
        }
        self.call("Input.dispatchKeyEvent", down).await?;
        self.call(
            "Input.dispatchKeyEvent",
            json!({
                "type": "keyUp",
                "key": key,
                "code": code,
                "windowsVirtualKeyCode": key_code,
                "nativeVirtualKeyCode": key_code,
                "modifiers": modifiers,
            }),
        )
        .await?;
        Ok(())
    }

    /// Takes the tab off the network (`true`: every new connection fails, as with no network
    /// at all) or puts it back.
    ///
    /// # Errors
    /// A CDP call failed.
    pub async fn set_offline(&self, offline: bool) -> anyhow::Result<()> {
        self.call("Network.enable", json!({})).await?;
        self.call(
            "Network.emulateNetworkConditions",
            json!({
                "offline": offline,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": -1,
            }),
        )
        .await?;
        Ok(())
    }

    /// Closes the tab.
    ///
    /// # Errors
    /// A CDP call failed.
    pub async fn close(self) -> anyhow::Result<()> {
        self.connection
            .call(None, "Target.closeTarget", json!({"targetId": self.target}))
            .await?;
        Ok(())
    }
}
