//! Client-side integration tests: a real PostgreSQL cluster with sqs_loader, real SQS emulators.
//! Run through `make test`.

mod docker;
mod docs;
mod etl;
mod faults;
mod hardening;
mod privacy;
mod sqs;
mod topologies;
mod upgrade;
mod workers;
