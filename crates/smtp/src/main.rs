//! `sluice-smtp`: the outbound SMTP/LMTP delivery agent.
//!
//! # Status
//! Not built yet: this program's job comes with issue #3. Until then it
//! says so and exits with status 2, so that nothing mistakes it for working.
//!
//! # Must never
//! Pretend to have done its job.

fn main() -> std::process::ExitCode {
    eprintln!("sluice-smtp: not implemented yet (the outbound SMTP/LMTP delivery agent comes with issue #3)");
    std::process::ExitCode::from(2)
}
