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
            deadline: seconds.map(|s| Instant::now() + Duration::from_secs(s)),
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
