//! `session-archive`: inspect, migrate between backends, and sweep session archives.
//!
//! The work is done by [`session_archive::cli`]; this file parses arguments, prints, and turns
//! every error into one line on stderr and a non-zero exit.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use session_archive::cli::{
    self, Access, CliError, Limit, MigrateOptions, Migrated, Spec, SweepOptions,
};
use session_archive::error::Chain;
use session_archive::{Archive, ArchiveExt};

/// Inspect session archives, move them between backends, and sweep expired sessions.
///
/// An archive is named by a spec: dir:PATH (a directory tree, <PATH>/<domain>/<key>),
/// redb:PATH (one redb file), redis://HOST:PORT/DB (a Redis server) or
/// postgres://USER@HOST:PORT/DB (a table in a PostgreSQL database; #table=NAME picks the table).
#[derive(Parser)]
#[command(name = "session-archive", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the domains, one per line.
    Domains {
        /// The archive.
        spec: String,
    },
    /// List the keys of one domain, one per line.
    Keys {
        /// The archive.
        spec: String,
        /// The domain.
        domain: String,
    },
    /// Write a value's raw bytes to stdout; a missing key exits 1.
    Get {
        /// The archive.
        spec: String,
        /// The domain.
        domain: String,
        /// The key.
        key: String,
    },
    /// Remove a key, or a whole domain when no key is given; a missing one exits 1.
    Rm {
        /// The archive.
        spec: String,
        /// The domain.
        domain: String,
        /// The key; without it the whole domain is removed.
        key: Option<String>,
    },
    /// Print the number of domains, keys and value bytes, and the size on disk.
    Stats {
        /// The archive.
        spec: String,
    },
    /// Copy every domain and key from one archive to another; the source is not modified.
    Migrate {
        /// The source archive; it must exist.
        from: String,
        /// The target archive; created if missing, and it must be empty unless --merge.
        to: String,
        /// Copy into a non-empty target: source entries replace entries with the same domain
        /// and key, and other entries stay. Completes an interrupted copy.
        #[arg(long)]
        merge: bool,
        /// Read every value back from the target and compare it with the source's.
        #[arg(long)]
        verify: bool,
        /// The most entries written in one batch (one transaction on redb).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
        batch: u32,
    },
    /// List a user's live sessions, one per line: the session's fingerprint (never the id, a
    /// bearer token), when it was created and when it was last seen (unix seconds).
    UserSessions {
        /// The archive.
        spec: String,
        /// The user id, as the application bound it with Session::set_user.
        user: String,
    },
    /// Destroy every session of a user ("sign out everywhere") and print how many.
    RevokeUser {
        /// The archive.
        spec: String,
        /// The user id, as the application bound it with Session::set_user.
        user: String,
    },
    /// Remove expired sessions, by the expiry settings the application stored in the archive.
    ///
    /// The application's Sessions records its idle timeout, absolute lifetime and the index's
    /// bucket width in the archive with its first session write; the sweep uses them, so it
    /// needs no flags. --idle or --absolute that differ from the stored values are refused unless
    /// --override is given, and are then announced on stderr: a shorter timeout removes sessions
    /// the application still holds live. --scan first visits every session once, which is needed
    /// once for sessions stored without timestamps (the original framework's, or migrated from
    /// its directory tree): they get timestamps from now and expire after the idle timeout unless
    /// used. An archive with no settings stored is swept only with both --idle and --absolute.
    Sweep {
        /// The archive.
        spec: String,
        /// Idle timeout: a session unused this long has expired (90s, 30m, 12h, 7d, or off).
        /// Default: the stored one (required where none is stored).
        #[arg(long, value_parser = parse_limit)]
        idle: Option<Limit>,
        /// Absolute lifetime: a session this old has expired (or off). Default: the stored one
        /// (required where none is stored).
        #[arg(long, value_parser = parse_limit)]
        absolute: Option<Limit>,
        /// The width of one expiry-index bucket, used only for an archive that has none recorded
        /// yet (with --scan, which records it). Default: 60s.
        #[arg(long, value_parser = parse_duration)]
        granularity: Option<Duration>,
        /// Sweep with --idle or --absolute even where they differ from the stored settings.
        #[arg(long = "override")]
        override_stored: bool,
        /// First scan every session once (cost: every domain): adopt those stored without
        /// timestamps, and index every session again, which also repairs an index whose
        /// sweep-cursor was removed.
        #[arg(long)]
        scan: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args.command) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(Failure::Io(err)) if err.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(failure) => {
            let line = match failure {
                Failure::Cli(err) => Chain(&err).to_string(),
                Failure::Io(err) => format!("cannot write the output: {err}"),
            };
            eprintln!("session-archive: {line}");
            ExitCode::FAILURE
        }
    }
}

/// Why a command failed: the archive side, or writing to stdout.
enum Failure {
    Cli(CliError),
    Io(io::Error),
}

impl From<CliError> for Failure {
    fn from(err: CliError) -> Self {
        Failure::Cli(err)
    }
}

impl From<session_archive::Error> for Failure {
    fn from(err: session_archive::Error) -> Self {
        Failure::Cli(err.into())
    }
}

impl From<io::Error> for Failure {
    fn from(err: io::Error) -> Self {
        Failure::Io(err)
    }
}

fn open(spec: &str, access: Access) -> Result<Box<dyn Archive>, CliError> {
    Spec::parse(spec)?.open(access)
}

fn run(command: Command) -> Result<(), Failure> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    match command {
        Command::Domains { spec } => domains(&mut out, &spec)?,
        Command::Keys { spec, domain } => keys(&mut out, &spec, domain)?,
        Command::Get { spec, domain, key } => get(&mut out, &spec, domain, key)?,
        Command::Rm { spec, domain, key } => rm(&mut out, &spec, domain, key)?,
        Command::Stats { spec } => stats(&mut out, &spec)?,
        Command::Migrate {
            from,
            to,
            merge,
            verify,
            batch,
        } => {
            let options = MigrateOptions {
                merge,
                verify,
                batch_entries: batch as usize,
                ..MigrateOptions::default()
            };
            migrate(&mut out, &from, &to, &options)?;
        }
        Command::UserSessions { spec, user } => user_sessions(&mut out, &spec, &user)?,
        Command::RevokeUser { spec, user } => {
            let archive = open(&spec, Access::Existing)?;
            let revoked = cli::revoke_user(archive, &user)?;
            writeln!(out, "revoked {revoked} sessions")?;
        }
        Command::Sweep {
            spec,
            idle,
            absolute,
            granularity,
            override_stored,
            scan,
        } => {
            let options = SweepOptions {
                idle,
                absolute,
                granularity,
                override_stored,
                scan,
            };
            sweep(&mut out, &spec, &options)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Lists the domains on `out`, one per line, as they are fetched.
fn domains(out: &mut impl Write, spec: &str) -> Result<(), Failure> {
    let archive = open(spec, Access::Existing)?;
    for domain in archive.domains() {
        writeln!(out, "{}", domain?)?;
    }
    Ok(())
}

/// Lists the keys of `domain` on `out`, one per line; a domain with none does not exist.
fn keys(out: &mut impl Write, spec: &str, domain: String) -> Result<(), Failure> {
    let archive = open(spec, Access::Existing)?;
    let mut any = false;
    for key in archive.keys(&domain) {
        writeln!(out, "{}", key?)?;
        any = true;
    }
    if !any {
        return Err(CliError::NoSuchDomain { domain }.into());
    }
    Ok(())
}

/// Writes a value's raw bytes to `out`.
fn get(out: &mut impl Write, spec: &str, domain: String, key: String) -> Result<(), Failure> {
    let archive = open(spec, Access::Existing)?;
    let Some(value) = archive.get(&domain, &key)? else {
        return Err(CliError::NoSuchKey { domain, key }.into());
    };
    out.write_all(&value)?;
    Ok(())
}

/// Removes a key, or the whole domain without one, and says so on `out`.
fn rm(
    out: &mut impl Write,
    spec: &str,
    domain: String,
    key: Option<String>,
) -> Result<(), Failure> {
    let archive = open(spec, Access::Existing)?;
    if let Some(key) = key {
        if !archive.remove(&domain, &key)? {
            return Err(CliError::NoSuchKey { domain, key }.into());
        }
        writeln!(out, "removed key {key:?} of domain {domain:?}")?;
    } else {
        if !archive.remove_domain(&domain)? {
            return Err(CliError::NoSuchDomain { domain }.into());
        }
        writeln!(out, "removed domain {domain:?}")?;
    }
    Ok(())
}

/// Prints what the archive holds, and its size on disk where it has one.
fn stats(out: &mut impl Write, spec: &str) -> Result<(), Failure> {
    let parsed = Spec::parse(spec)?;
    let stats = cli::stats(&*parsed.open(Access::Existing)?)?;
    writeln!(out, "domains: {}", stats.domains)?;
    writeln!(out, "keys: {}", stats.keys)?;
    writeln!(out, "value bytes: {}", stats.value_bytes)?;
    if let Some(size) = parsed.disk_size()? {
        writeln!(out, "size on disk: {size}")?;
    }
    Ok(())
}

/// Copies one archive into another with a progress bar on stderr, and says what it copied on
/// `out`.
fn migrate(
    out: &mut impl Write,
    from: &str,
    to: &str,
    options: &MigrateOptions,
) -> Result<(), Failure> {
    let source = open(from, Access::Existing)?;
    let target = open(to, Access::CreateIfMissing)?;
    let bar = progress_bar(&*source)?;
    let done = cli::migrate(&*source, &*target, options, &mut |done: &Migrated| {
        bar.set_position(done.domains);
        bar.set_message(format!("{} keys", done.keys));
    });
    bar.finish_and_clear();
    let done = done?;
    let verified = if options.verify { ", verified" } else { "" };
    writeln!(
        out,
        "copied {} domains, {} keys, {} value bytes from {from} to {to}{verified}",
        done.domains, done.keys, done.bytes
    )?;
    Ok(())
}

/// Lists a user's sessions on `out`, one line each: fingerprint, created and seen (unix seconds).
fn user_sessions(out: &mut impl Write, spec: &str, user: &str) -> Result<(), Failure> {
    let archive = open(spec, Access::Existing)?;
    let secs = |time: std::time::SystemTime| {
        time.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    };
    let mut failed = None;
    cli::user_sessions(archive, user, &mut |session| {
        if failed.is_none()
            && let Err(err) = writeln!(
                out,
                "{} created {} seen {}",
                session.id().fingerprint(),
                secs(session.created()),
                secs(session.seen())
            )
        {
            failed = Some(err);
        }
    })?;
    match failed {
        Some(err) => Err(err.into()),
        None => Ok(()),
    }
}

/// Sweeps, printing the notices about its settings on stderr as they come, and what it did on
/// `out`.
fn sweep(out: &mut impl Write, spec: &str, options: &SweepOptions) -> Result<(), Failure> {
    let archive = open(spec, Access::Existing)?;
    let bar = if options.scan {
        scan_bar()
    } else {
        ProgressBar::hidden()
    };
    let swept = cli::sweep(
        archive,
        options,
        &mut |line| bar.suspend(|| eprintln!("session-archive: {line}")),
        &mut |scanned| bar.set_position(scanned),
    );
    bar.finish_and_clear();
    let swept = swept?;
    if let Some(adopted) = swept.adopted {
        writeln!(out, "adopted {adopted} sessions stored without timestamps")?;
    }
    writeln!(out, "removed {} expired sessions", swept.removed)?;
    Ok(())
}

/// A counter on stderr of the domains a sweep's scan has visited, with its rate; hidden when
/// stderr is not a terminal. The total is not counted first: that would be a second full pass.
fn scan_bar() -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} scanned {pos} domains, {rate} domains/s, elapsed {elapsed}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_spinner())
    .with_key("rate", |state: &ProgressState, out: &mut dyn fmt::Write| {
        let _ = write!(out, "{:.0}", state.per_sec());
    });
    bar.set_style(style);
    bar
}

/// A progress bar on stderr counting domains, with rate and ETA; hidden when stderr is not a
/// terminal, in which case the source is not walked an extra time to count its domains.
fn progress_bar(source: &dyn Archive) -> Result<ProgressBar, CliError> {
    if !io::stderr().is_terminal() {
        return Ok(ProgressBar::hidden());
    }
    let mut total = 0;
    for domain in source.domains() {
        domain?;
        total += 1;
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{bar:30} {pos}/{len} domains ({msg}), {rate} domains/s, elapsed {elapsed}, ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key("rate", |state: &ProgressState, out: &mut dyn fmt::Write| {
        let _ = write!(out, "{:.0}", state.per_sec());
    });
    bar.set_style(style);
    bar.set_message("0 keys");
    Ok(bar)
}

/// Parses a duration written as a whole number and one unit: `s`, `m`, `h` or `d`
/// (`90s`, `30m`, `12h`, `7d`); anything else, an overflow included, is [`CliError::Duration`].
fn parse_duration(text: &str) -> Result<Duration, CliError> {
    let invalid = || CliError::Duration {
        text: text.to_owned(),
    };
    let split = text.len().checked_sub(1).ok_or_else(invalid)?;
    let (number, unit) = (text.get(..split), text.get(split..));
    let unit = match unit {
        Some("s") => 1,
        Some("m") => 60,
        Some("h") => 60 * 60,
        Some("d") => 24 * 60 * 60,
        _ => return Err(invalid()),
    };
    let number = number.ok_or_else(invalid)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let count: u64 = number.parse().map_err(|_| invalid())?;
    count
        .checked_mul(unit)
        .map(Duration::from_secs)
        .ok_or_else(invalid)
}

/// Parses a session time limit: a duration (see [`parse_duration`]) or `off`, for none.
fn parse_limit(text: &str) -> Result<Limit, CliError> {
    if text == "off" {
        Ok(Limit(None))
    } else {
        parse_duration(text).map(|limit| Limit(Some(limit)))
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_limit};
    use session_archive::cli::Limit;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(30 * 60));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        for bad in [
            "",
            "s",
            "30",
            "1.5h",
            "h1",
            "1w",
            "-1h",
            "+1h",
            "1 h",
            "1hh",
            "99999999999999999999d",
            "1é",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn limits() {
        assert_eq!(
            parse_limit("1h").unwrap(),
            Limit(Some(Duration::from_secs(3600)))
        );
        assert_eq!(parse_limit("off").unwrap(), Limit(None));
        assert!(parse_limit("never").is_err());
    }
}
