//! How a command of the `jobwire` binary that failed reports it: one line on stderr that a
//! person can act on — a gRPC status as its name and the server's message (`NOT_FOUND: job_id:
//! ...`), each cause once — and an exit code a script can act on (see [`EXIT_CODES`]).
//! `jobwire health` keeps grpc_health_probe's codes (`cli::health`).

use std::process::ExitCode;

use jobwire::client::ClientError;
use tonic::Code;

/// The exit codes of every command but `health`, as `--help` and the README state them.
pub(crate) const EXIT_CODES: &str = "\
Exit codes (all commands but `health`, which keeps grpc_health_probe's):
  0  done
  1  the request failed: the server refused it (its status and message are printed), the job
     awaited by `add --wait` died, was cancelled or did not finish in time, or `serve` could
     not start
  2  the command line is wrong
  3  the server cannot be reached, or answered UNAVAILABLE (Redis is away): retry later";

const FAILED: u8 = 1;
const UNREACHABLE: u8 = 3;

/// Prints `error` as one line and returns its exit code.
pub(crate) fn report(error: &anyhow::Error) -> ExitCode {
    eprintln!("jobwire: {}", one_line(error));
    ExitCode::from(code(error))
}

/// The error and its causes on one line, joined by ": ", each said once: a wrapper that only
/// repeats its source (`ClientError::Rpc`) is skipped, and so is a cause whose text the line
/// already holds.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        if cause.source().is_some_and(|source| source.to_string() == cause.to_string()) {
            continue;
        }
        let text = match cause.downcast_ref::<tonic::Status>() {
            Some(status) if status.message().is_empty() => code_name(status.code()).to_owned(),
            Some(status) => format!("{}: {}", code_name(status.code()), status.message()),
            None => cause.to_string(),
        };
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn code(error: &anyhow::Error) -> u8 {
    let unreachable = error.chain().any(|cause| {
        matches!(cause.downcast_ref::<ClientError>(), Some(ClientError::Connect { .. }))
            || cause.downcast_ref::<tonic::Status>().is_some_and(|s| s.code() == Code::Unavailable)
    });
    if unreachable { UNREACHABLE } else { FAILED }
}

/// A status code as the gRPC specification names it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_said_once_by_its_name_and_message() {
        let status = tonic::Status::not_found("job_id: job q/01J does not exist");
        let wrapped = anyhow::Error::from(ClientError::from(status.clone()));
        assert_eq!(one_line(&wrapped), "NOT_FOUND: job_id: job q/01J does not exist");
        assert_eq!(code(&wrapped), FAILED);
        let raw = anyhow::Error::from(status).context("cancelling");
        assert_eq!(one_line(&raw), "cancelling: NOT_FOUND: job_id: job q/01J does not exist");
    }

    #[test]
    fn unavailable_asks_for_a_retry() {
        let error = anyhow::Error::from(tonic::Status::unavailable("redis is unavailable; retry later"));
        assert_eq!(one_line(&error), "UNAVAILABLE: redis is unavailable; retry later");
        assert_eq!(code(&error), UNREACHABLE);
    }
}
