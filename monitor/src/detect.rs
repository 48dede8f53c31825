//! IM clients installed while `monitor watch` runs (S7): the modules'
//! `detect` hints are checked again when a watched folder changes (file
//! system events through `notify`: inotify, FSEvents, ReadDirectoryChanges)
//! and every round as a fallback (executables on PATH, platforms without
//! events). A client that appeared for a network not bound yet is asked
//! about once per run: at the prompt when a person can answer, else as a
//! desktop notification where `notify-send` exists, else as a line in the
//! log. A no is remembered as `scan` remembers it; `--ask-again` asks
//! about declined networks again, once.

use crate::client::Client;
use crate::scan::{register, Places};
use crate::store::{LocalBinding, State};
use crate::{prompt, Context, MonitorError};
use gateway_api::ModuleView;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What `watch` keeps to notice new clients.
pub struct Detector {
    places: Places,
    modules: Vec<ModuleView>,
    ask_again: bool,
    /// Modules asked about (or told about) in this run.
    asked: BTreeSet<String>,
    /// `None` where the platform has no events.
    watcher: Option<notify::RecommendedWatcher>,
    watched: BTreeSet<PathBuf>,
    events: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Detector {
    /// Watches the folders where `modules`' clients would appear.
    pub fn new(places: Places, modules: Vec<ModuleView>, ask_again: bool) -> Detector {
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| e.kind.is_create() || e.kind.is_modify() || e.kind.is_remove()) {
                let _ = tx.send(());
            }
        })
        .ok();
        let mut detector = Detector {
            places,
            modules,
            ask_again,
            asked: BTreeSet::new(),
            watcher,
            watched: BTreeSet::new(),
            events,
        };
        detector.rewatch();
        detector
    }

    /// Watches the nearest existing folder of each hint: a folder made on
    /// the way to a client's config folder moves the watch down to it.
    fn rewatch(&mut self) {
        use notify::Watcher;
        let Some(watcher) = &mut self.watcher else {
            return;
        };
        let wanted: BTreeSet<PathBuf> = self.places.watched(&self.modules).into_iter().collect();
        for gone in self.watched.difference(&wanted) {
            let _ = watcher.unwatch(gone);
        }
        self.watched.retain(|d| wanted.contains(d));
        for dir in wanted {
            if !self.watched.contains(&dir)
                && watcher
                    .watch(&dir, notify::RecursiveMode::NonRecursive)
                    .is_ok()
            {
                self.watched.insert(dir);
            }
        }
    }

    /// The modules as the gateway lists them now (an operator may have
    /// uploaded one since the watch began).
    pub fn update(&mut self, modules: &[ModuleView]) {
        let ids = |m: &[ModuleView]| m.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        if ids(modules) != ids(&self.modules) {
            self.modules = modules.to_vec();
            self.rewatch();
        }
    }

    /// Waits for a change in a watched folder (forever without events).
    pub async fn changed(&mut self) {
        if self.watched.is_empty() || self.events.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
        // A burst of events (a folder and its files) is one change.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        while self.events.try_recv().is_ok() {}
        self.rewatch();
    }

    /// Looks for clients of networks not bound yet and asks about each
    /// once per run.
    pub async fn check(
        &mut self,
        ctx: &Context,
        client: &Client,
        bound: &[LocalBinding],
        state: &mut State,
    ) -> Result<(), MonitorError> {
        for module in &self.modules {
            if bound.iter().any(|b| b.module == module.id) || self.asked.contains(&module.id) {
                continue;
            }
            if state.declined.contains(&module.id) && !self.ask_again {
                continue;
            }
            let Some((hints, evidence)) = self.places.installed(module) else {
                continue;
            };
            self.asked.insert(module.id.clone());
            let what = format!("{} ({})", hints.name, module.name);
            let question = format!(
                "found {what} at {}, installed while watching. Register {} for sync?",
                evidence.display(),
                hints.name
            );
            let asked = question.clone();
            let answer = tokio::task::spawn_blocking(move || prompt::confirm(&asked))
                .await
                .map_err(|e| MonitorError::Usage(format!("the question was lost: {e}")))?;
            match answer {
                Ok(true) => {
                    if let Err(e) = register(ctx, client, module, None, state).await {
                        eprintln!("{what}: not bound: {e}");
                    }
                }
                Ok(false) => {
                    state.declined.insert(module.id.clone());
                    ctx.store.save_state(state)?;
                    println!("{what}: not registered; it will not be offered again");
                }
                // Nobody to answer (a background service): tell the desktop,
                // or the log.
                Err(_) => tell(&what, &evidence, &module.id),
            }
        }
        Ok(())
    }
}

/// Says a client was found where nobody can answer a prompt.
fn tell(what: &str, evidence: &Path, module: &str) {
    let text = format!(
        "found {what} at {}: `monitor scan` registers it for sync (`monitor bind {module} ACCOUNT` binds it directly)",
        evidence.display()
    );
    let notified = std::process::Command::new("notify-send")
        .args(["--app-name=monitor", "New IM client found", &text])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    eprintln!("{text}{}", if notified { " (notified)" } else { "" });
}
