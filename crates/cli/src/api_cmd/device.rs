//! `longlink device register|list|remove` (docs/api.md "Devices and push providers"): the
//! push tokens a device gets offline notifications with (APNs, FCM, a vendor channel), set
//! and read through the API as a business server would. Takes a key covering the appcode.
//!
//! `register` adds one provider's token through `POST /v1/devices/{appcode}/{uid}/{device}/tokens`
//! — one call on the node, so it cannot drop a token the app registered meanwhile, as a read,
//! merge and `PUT` of the whole device could. A class flag left out keeps the device's current
//! value (read first; the class is only a hint for provider selection, so a race there costs
//! nothing).

use std::time::Duration;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use super::{Api, ApiFailure, ApiOpts, utc_ms};

/// `longlink device …`.
#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCommand {
    /// Registers a push token for a device (replacing that provider's previous token; the
    /// device's tokens of other providers stay).
    Register(RegisterArgs),
    /// Lists a user's devices and their push tokens (or one device's).
    List(ListArgs),
    /// Removes a device's push tokens: every one, or one provider's.
    Remove(RemoveArgs),
}

/// Which device.
#[derive(Debug, Args)]
struct DeviceId {
    /// The user's appcode.
    #[arg(long)]
    appcode: u32,
    /// The user.
    #[arg(long)]
    uid: String,
    /// The device id, as the app logs in with it.
    #[arg(long)]
    device: String,
}

#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    #[command(flatten)]
    id: DeviceId,
    /// The provider's configured name: `apns`, `fcm` or a `[[push.http]]` name.
    #[arg(long)]
    provider: String,
    /// The provider's device token.
    #[arg(long)]
    token: String,
    /// The device's platform (`ios`, `android`, …); default: as registered before.
    #[arg(long)]
    platform: Option<String>,
    /// The device's push ecosystem (`apple`, `google`, `huawei`, …); default: as before.
    #[arg(long)]
    vendor: Option<String>,
    /// The app's version; default: as before.
    #[arg(long)]
    app_version: Option<String>,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The user's appcode.
    #[arg(long)]
    appcode: u32,
    /// The user.
    #[arg(long)]
    uid: String,
    /// Only this device (an error when it has no registration).
    #[arg(long)]
    device: Option<String>,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Args)]
pub(crate) struct RemoveArgs {
    #[command(flatten)]
    id: DeviceId,
    /// Only this provider's token (default: every token of the device).
    #[arg(long)]
    provider: Option<String>,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiOpts,
}

#[derive(Debug, Serialize, Deserialize)]
struct Token {
    provider: String,
    token: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Device {
    appcode: u32,
    uid: String,
    device: String,
    platform: String,
    vendor: String,
    app_version: String,
    class: String,
    tokens: Vec<Token>,
    updated_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Devices {
    appcode: u32,
    uid: String,
    devices: Vec<Device>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Removed {
    removed: u32,
}

#[derive(Debug, Serialize)]
struct Register<'a> {
    provider: &'a str,
    token: &'a str,
    platform: String,
    vendor: String,
    app_version: String,
}

/// Runs `longlink device …`.
pub(crate) async fn device(command: DeviceCommand) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Register(args) => register(args).await,
        DeviceCommand::List(args) => list(args).await,
        DeviceCommand::Remove(args) => remove(args).await,
    }
}

/// The device's registration, `None` when it has none (404).
async fn current(api: &Api, id: &DeviceId) -> anyhow::Result<Option<Device>> {
    let appcode = id.appcode.to_string();
    let segments = ["v1", "devices", &appcode, &id.uid, &id.device];
    match api.get::<Device>(&segments, &[], Duration::ZERO).await {
        Ok(device) => Ok(Some(device)),
        Err(err)
            if err
                .downcast_ref::<ApiFailure>()
                .is_some_and(|f| f.status.is_some_and(|s| s.as_u16() == 404)) =>
        {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let id = &args.id;
    // Only a flag left out needs the current class.
    let before = if args.platform.is_none() || args.vendor.is_none() || args.app_version.is_none() {
        current(&api, id).await?
    } else {
        None
    };
    let keep = |given: Option<String>, field: fn(&Device) -> &String| {
        given.unwrap_or_else(|| before.as_ref().map(field).cloned().unwrap_or_default())
    };
    let body = Register {
        provider: &args.provider,
        token: &args.token,
        platform: keep(args.platform, |d| &d.platform),
        vendor: keep(args.vendor, |d| &d.vendor),
        app_version: keep(args.app_version, |d| &d.app_version),
    };
    let appcode = id.appcode.to_string();
    let device: Device = api
        .post(
            &["v1", "devices", &appcode, &id.uid, &id.device, "tokens"],
            &body,
        )
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&device)?);
    } else {
        println!(
            "registered {} token for {}:{}/{}",
            args.provider, device.appcode, device.uid, device.device
        );
        print_devices(std::slice::from_ref(&device));
    }
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let appcode = args.appcode.to_string();
    let devices = match &args.device {
        Some(device) => {
            let one: Device = api
                .get(
                    &["v1", "devices", &appcode, &args.uid, device],
                    &[],
                    Duration::ZERO,
                )
                .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&one)?);
                return Ok(());
            }
            vec![one]
        }
        None => {
            let all: Devices = api
                .get(&["v1", "devices", &appcode, &args.uid], &[], Duration::ZERO)
                .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            all.devices
        }
    };
    if devices.is_empty() {
        println!(
            "{}:{} has no device with push tokens",
            args.appcode, args.uid
        );
        return Ok(());
    }
    print_devices(&devices);
    Ok(())
}

async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.api)?;
    let id = &args.id;
    let appcode = id.appcode.to_string();
    let query: Vec<(&str, String)> = args
        .provider
        .iter()
        .map(|p| ("provider", p.clone()))
        .collect();
    let removed: Removed = api
        .delete_with(&["v1", "devices", &appcode, &id.uid, &id.device], &query)
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&removed)?);
    } else {
        println!(
            "removed {} token{} of {}:{}/{}",
            removed.removed,
            if removed.removed == 1 { "" } else { "s" },
            id.appcode,
            id.uid,
            id.device
        );
    }
    Ok(())
}

/// One line per token: device, class, provider, token (shortened), when it changed.
fn print_devices(devices: &[Device]) {
    println!(
        "{:<24} {:<28} {:<10} {:<32} UPDATED",
        "DEVICE", "CLASS", "PROVIDER", "TOKEN"
    );
    for device in devices {
        let updated = utc_ms(device.updated_ms);
        if device.tokens.is_empty() {
            println!(
                "{:<24} {:<28} {:<10} {:<32} {updated}",
                device.device, device.class, "-", "-"
            );
        }
        for token in &device.tokens {
            println!(
                "{:<24} {:<28} {:<10} {:<32} {updated}",
                device.device,
                device.class,
                token.provider,
                short(&token.token)
            );
        }
    }
}

/// A token as a table shows it: whole up to 32 characters, else its first 20 and last 8
/// (`--json` prints it whole).
fn short(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    if chars.len() <= 32 {
        return token.to_owned();
    }
    let head: String = chars[..20].iter().collect();
    let tail: String = chars[chars.len() - 8..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn long_tokens_are_shortened_in_tables() {
        assert_eq!(short("abc"), "abc");
        let long = "0123456789abcdef".repeat(4);
        let shown = short(&long);
        assert_eq!(shown, "0123456789abcdef0123…89abcdef");
        assert_eq!(short("é".repeat(40).as_str()).chars().count(), 29);
    }
}
