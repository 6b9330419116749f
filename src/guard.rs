//! `drover step-guard -- PROGRAM [ARGS…]`: the exec driver starts every step through
//! this guard so that no step outlives its worker.
//!
//! The guard leads the step's process group (the worker starts it with a group of
//! its own) and asks the kernel for SIGUSR2 when its parent, the worker, dies —
//! however it dies, `kill -9` included. On that signal (or SIGINT or SIGHUP) it kills
//! the whole group: the step and everything the step started. SIGTERM, which the
//! worker sends the whole group to stop a step gracefully, is the step's to handle:
//! the guard keeps waiting for it. Otherwise it waits for the step and exits with
//! its status (`128 + N` when the step was killed by signal N).

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{getpgrp, getppid};
use signal_hook::iterator::Signals;

/// The signal the kernel sends the guard when the worker dies.
const PARENT_DEATH: Signal = Signal::SIGUSR2;

/// The exit code when the guard itself cannot start the step.
const GUARD_FAILED: u8 = 125;

/// This binary as the exec driver's step guard. Without a path to ourselves (which
/// Linux always has) steps run unguarded, and a warning says what that means.
pub(crate) fn step_guard() -> Option<worker::driver::StepGuard> {
    match std::env::current_exe() {
        Ok(program) => Some(worker::driver::StepGuard {
            program,
            args: vec![crate::STEP_GUARD.to_owned()],
        }),
        Err(err) => {
            tracing::warn!(error = %err, "cannot find the drover binary; steps run unguarded and outlive a killed worker");
            None
        }
    }
}

/// Runs the guard; `argv` is the step's program and arguments.
pub(crate) fn run(argv: &[OsString]) -> ExitCode {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("drover step-guard: no program to run");
        return ExitCode::from(GUARD_FAILED);
    };
    let parent = getppid();
    if let Err(err) = nix::sys::prctl::set_pdeathsig(PARENT_DEATH) {
        eprintln!("drover step-guard: failed to ask for the parent-death signal: {err}");
        return ExitCode::from(GUARD_FAILED);
    }
    // Handlers (not a blocked mask, which a step would inherit and so never see
    // SIGTERM) are in place before the step starts, so that no signal is missed.
    let mut signals = match Signals::new([
        PARENT_DEATH as i32,
        Signal::SIGTERM as i32,
        Signal::SIGINT as i32,
        Signal::SIGHUP as i32,
        Signal::SIGCHLD as i32,
    ]) {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("drover step-guard: failed to install signal handlers: {err}");
            return ExitCode::from(GUARD_FAILED);
        }
    };
    // The worker may have died before the parent-death signal was armed.
    if getppid() != parent {
        return ExitCode::from(GUARD_FAILED);
    }
    let mut step = match Command::new(program).args(args).spawn() {
        Ok(step) => step,
        Err(err) => {
            eprintln!(
                "drover step-guard: failed to start `{}`: {err}",
                program.to_string_lossy()
            );
            return ExitCode::from(GUARD_FAILED);
        }
    };
    for signal in signals.forever() {
        match Signal::try_from(signal) {
            Ok(Signal::SIGCHLD) => match step.try_wait() {
                Ok(Some(status)) => {
                    let code = status
                        .code()
                        .or_else(|| status.signal().map(|signal| 128 + signal))
                        .unwrap_or(1);
                    return ExitCode::from(u8::try_from(code).unwrap_or(1));
                }
                Ok(None) => {}
                Err(_) => return ExitCode::from(GUARD_FAILED),
            },
            // The step got it too (it was sent to the group): the step decides.
            Ok(Signal::SIGTERM) => {}
            // The worker died (or someone asks us to stop): take the whole group
            // down, us too.
            _ => {
                let _ = killpg(getpgrp(), Signal::SIGKILL);
                return ExitCode::from(GUARD_FAILED);
            }
        }
    }
    ExitCode::from(GUARD_FAILED)
}
