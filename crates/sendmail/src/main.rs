//! `sluice-sendmail`: sendmail(1) local submission.
//!
//! # Status
//! Not built yet: this program's job comes with issue #6. Until then it
//! says so and exits with status 2, so that nothing mistakes it for working.
//!
//! # Must never
//! Pretend to have done its job.

fn main() -> std::process::ExitCode {
    eprintln!(
        "sluice-sendmail: not implemented yet (sendmail(1) local submission comes with issue #6)"
    );
    std::process::ExitCode::from(2)
}
