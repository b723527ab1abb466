//! The one place a domain error becomes a gRPC status. The match is exhaustive on purpose: a new
//! error variant must decide its status code here.

use tonic::Status;

use crate::queue::Error;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Invalid { .. } => Status::invalid_argument(message),
            Error::NotFound(_) => Status::not_found(message),
            Error::StaleLease(_) => Status::failed_precondition(message),
            Error::TooLarge(_) | Error::Full(_) => Status::resource_exhausted(message),
            Error::Precondition(_) => Status::failed_precondition(message),
            Error::AlreadyExists(_) => Status::already_exists(message),
            Error::Aborted(_) => Status::aborted(message),
            Error::OutOfRange(_) => Status::out_of_range(message),
            Error::Unavailable | Error::ShuttingDown => Status::unavailable(message),
            Error::Internal => Status::internal(message),
        }
    }
}
