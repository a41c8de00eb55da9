//! What ends a [`super::run::Run`]: Ctrl-C, SIGTERM, or the end of `-d SECONDS` (the agent has
//! no deadline).
use std::time::Duration;

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::Instant,
};

pub struct Stop {
    sigint: Signal,
    sigterm: Signal,
    deadline: Option<Instant>,
}

impl Stop {
    /// Listens for the signals from now on; `seconds`: the `-d` duration, if any.
    pub fn new(seconds: Option<u64>) -> std::io::Result<Stop> {
        Ok(Stop {
            sigint: signal(SignalKind::interrupt())?,
            sigterm: signal(SignalKind::terminate())?,
            // A -d further off than the clock can count (u64 seconds) ends only by a signal,
            // as it would in practice: adding it to now would panic.
            deadline: seconds.and_then(|s| Instant::now().checked_add(Duration::from_secs(s))),
        })
    }

    /// Resolves when it is time to stop. Cancel-safe, so it can be one branch of a `select!`
    /// loop: a signal that arrives meanwhile is kept, and the deadline stays where it was.
    pub async fn wait(&mut self) {
        let until_deadline = async {
            match self.deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.sigint.recv() => {}
            _ = self.sigterm.recv() => {}
            _ = until_deadline => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `-d 18446744073709551615` panicked adding it to now (exit 101).
    #[test]
    fn a_duration_past_the_clock_is_no_deadline() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            assert!(Stop::new(Some(u64::MAX)).unwrap().deadline.is_none());
            assert!(Stop::new(Some(1)).unwrap().deadline.is_some());
        });
    }
}
