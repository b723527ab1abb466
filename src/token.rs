//! `jobwire token create|list|revoke`: edits a token file (`serve --auth-tokens`) in place,
//! without a server. `create` prints the new secret, and only it, on stdout, so that a script can
//! capture it (`TOKEN=$(jobwire token create ...)`); the file keeps its SHA-256 digest only, so
//! the secret cannot be shown again. Every change rewrites the whole file atomically; running
//! servers pick it up on SIGHUP.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use jobwire::auth::{Reveal, Role, Secret, TokenEntry, TokenFile};

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCommand {
    /// Add a token to the file (created if missing) and print its secret on stdout: keep it,
    /// it is not stored and cannot be shown again.
    Create(CreateArgs),
    /// List the file's tokens: name, role, queues, certificate subject, what a reader is shown.
    List(ListArgs),
    /// Remove a token from the file. Running servers drop it on SIGHUP and end its streams.
    Revoke(RevokeArgs),
}

#[derive(Args, Debug)]
pub(crate) struct FileArg {
    /// The token file (the server's --auth-tokens).
    #[arg(long, env = "JOBWIRE_AUTH_TOKENS", value_name = "FILE")]
    file: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    file: FileArg,
    /// Its unique name, as logs and audit lines show it: 1 to 64 of A-Z a-z 0-9 _ . : @ -.
    #[arg(long)]
    name: String,
    /// What it may call.
    #[arg(long, value_enum)]
    role: Role,
    /// The queues it covers, comma-separated: exact names or prefixes ending in `*` (default:
    /// every queue).
    #[arg(long, value_delimiter = ',')]
    queues: Vec<String>,
    /// A client certificate subject that stands in for the token (mTLS), as the server shows it.
    #[arg(long)]
    subject: Option<String>,
    /// For a reader: what it is shown although readers are not by default, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    reveal: Vec<Reveal>,
}

#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    file: FileArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct RevokeArgs {
    #[command(flatten)]
    file: FileArg,
    /// The token to remove.
    #[arg(long)]
    name: String,
}

pub(crate) fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(args) => create(args),
        TokenCommand::List(args) => list(args),
        TokenCommand::Revoke(args) => revoke(args),
    }
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let path = &args.file.file;
    let mut file = TokenFile::load_or_empty(path)?;
    let secret = Secret::generate()?;
    let entry = TokenEntry {
        name: args.name.clone(),
        role: args.role,
        queues: Some(args.queues).filter(|q| !q.is_empty()),
        sha256: Some(secret.sha256_hex()),
        subject: args.subject,
        reveal: args.reveal,
    };
    file.add(entry).map_err(|problem| anyhow!("cannot add the token: {problem}"))?;
    file.save(path)?;
    println!("{}", secret.expose());
    eprintln!("token {:?} ({}) added to {}; running servers load it on SIGHUP", args.name, args.role, path.display());
    Ok(())
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let file = TokenFile::load(&args.file.file)?;
    let queues = |e: &TokenEntry| e.queues.as_ref().map_or_else(|| "*".to_owned(), |q| q.join(","));
    let reveal = |e: &TokenEntry| e.reveal.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",");
    if args.json {
        let rows: Vec<serde_json::Value> = file
            .tokens
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name, "role": e.role, "queues": e.queues, "subject": e.subject,
                    "has_token": e.sha256.is_some(), "reveal": e.reveal,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).context("printing JSON")?);
        return Ok(());
    }
    println!("{:<24} {:<9} {:<32} {:<16} SUBJECT", "NAME", "ROLE", "QUEUES", "REVEAL");
    for e in &file.tokens {
        println!(
            "{:<24} {:<9} {:<32} {:<16} {}",
            e.name,
            e.role,
            queues(e),
            reveal(e),
            e.subject.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let path = &args.file.file;
    let mut file = TokenFile::load(path)?;
    if file.revoke(&args.name).is_none() {
        return Err(anyhow!("no token named {:?} in {}", args.name, path.display()));
    }
    file.save(path)?;
    eprintln!("token {:?} removed from {}; send SIGHUP to running servers to end its calls", args.name, path.display());
    Ok(())
}
