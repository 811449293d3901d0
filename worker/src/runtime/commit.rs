//! The committer: turns a committed attempt into `result.json` and its `finished` event. A task
//! commits by publishing its [`JobResult`] to [`topology::COMMITS_QUEUE`] in the same broker
//! transaction that acks the task ([`super::task`]), so exactly one record exists per job run.
//! Every worker consumes that queue; for each record it writes `{tenant}/{job_id}/result.json`
//! unless one is there already (the first committed result wins and is the one published), then
//! publishes `finished` and acks the record in one transaction. So `result.json` exists before
//! anyone hears `finished`, and the API (fed by `finished`) agrees with the store.
//!
//! A store that fails transiently delays the record on the retry ladder
//! ([`topology::COMMIT_TRIES_HEADER`] counts the tries); after [`MAX_COMMIT_TRIES`] the record goes to the
//! dead-letter queue with its reason and the result is published without a manifest. A key or
//! request the store refuses for good publishes it without a manifest at once. Nothing loops.
//!
//! Once a result is committed, the files of the job's other executions (`a{n}-{nonce}/`
//! folders of attempts that were interrupted, or lost their delivery, mid-upload) are deleted.

use std::collections::HashSet;
use std::time::Duration;

use bus::{Delivery, Message, topology};
use protocol::JobResult;
use tracing::{info, warn};

use super::Worker;
use super::task::{event_message, finished_event};
use crate::storage::{ObjectMeta, RESULT_FILE, output_key};

/// Tries to store a result before its record is dead-lettered (with the default ladder, about
/// nine minutes of store outage).
pub const MAX_COMMIT_TRIES: u32 = 20;

/// What to do with a record.
enum Step {
    /// Publish this result as `finished` (stored, or found stored).
    Publish(JobResult),
    /// The store failed for now: try again later.
    Later(String),
}

impl Worker {
    /// Handles one commit record (see the module docs) and settles it.
    pub(crate) async fn write_manifest(&self, delivery: Delivery) {
        let (message, _, acker) = delivery.into_parts();
        let tries: u32 = message.headers.get(topology::COMMIT_TRIES_HEADER).and_then(|t| t.parse().ok()).unwrap_or(0);
        let result: JobResult = match serde_json::from_slice(&message.body) {
            Ok(r) => r,
            Err(e) => {
                // Only workers publish records; an unreadable one cannot be stored or announced.
                warn!(message_id = %message.id, "unreadable commit record dropped: {e}");
                let _ = acker.ack().await;
                return;
            }
        };
        let step = self.store_result(result.clone()).await;
        let out = match step {
            Step::Publish(committed) => {
                self.collect_garbage(&committed).await;
                if message.headers.contains_key(topology::ANNOUNCED_HEADER) {
                    // The scheduler published `finished` itself (a job refused or ended at
                    // admission): only the manifest was missing.
                    acker.ack().await
                } else {
                    let event = finished_event(committed, &self.cfg.id);
                    acker.ack_with(vec![event_message(&event)]).await
                }
            }
            Step::Later(why) if tries + 1 >= MAX_COMMIT_TRIES => {
                warn!(job_id = %result.job_id, tries = tries + 1, "result not stored; dead-lettering its record and publishing it without a manifest: {why}");
                let mut dead = message.clone();
                dead.headers.insert(topology::REASON_HEADER.into(), format!("result.json not stored: {why}"));
                let event = finished_event(result, &self.cfg.id);
                acker
                    .ack_with(vec![(String::new(), topology::DEAD_LETTER_QUEUE.into(), dead), event_message(&event)])
                    .await
            }
            Step::Later(why) => {
                warn!(job_id = %result.job_id, tries = tries + 1, "result not stored yet; trying again later: {why}");
                let mut again = Message::new(message.id.clone(), message.body.clone());
                again.headers = message.headers.clone();
                again.headers.insert(topology::COMMIT_TRIES_HEADER.into(), (tries + 1).to_string());
                match self.rungs.get((tries as usize).min(self.rungs.len().saturating_sub(1))) {
                    Some(rung) => acker.ack_with(vec![(rung.clone(), topology::COMMITS_QUEUE.into(), again)]).await,
                    None => {
                        // No ladder configured: wait here instead, so the record cannot spin.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        acker.ack_with(vec![(String::new(), topology::COMMITS_QUEUE.into(), again)]).await
                    }
                }
            }
        };
        if let Err(e) = out {
            warn!(message_id = %message.id, "commit record not settled ({e}); the broker redelivers it");
        }
    }

    /// Deletes every file in the job's execution folders that the committed result does not
    /// point to (best effort; a later commit of the same job tries again).
    async fn collect_garbage(&self, committed: &JobResult) {
        let prefix = format!("{}/{}/", committed.tenant, committed.job_id);
        let keep: HashSet<String> = committed.outputs.iter().filter_map(|o| self.store.key_of(&o.uri)).collect();
        let keys = match self.store.list(&prefix).await {
            Ok(keys) => keys,
            Err(e) => return warn!(job_id = %committed.job_id, "outputs of other attempts not listed: {e}"),
        };
        for key in keys {
            let folder = key[prefix.len()..].split_once('/').map(|(f, _)| f);
            if folder.is_some_and(is_execution_folder) && !keep.contains(&key) {
                match self.store.delete(&key).await {
                    Ok(()) => info!(%key, "deleted an output of an uncommitted attempt"),
                    Err(e) => warn!(%key, "output of an uncommitted attempt not deleted: {e}"),
                }
            }
        }
    }

    /// Writes `result.json` unless a committed one exists; says what to publish.
    async fn store_result(&self, result: JobResult) -> Step {
        let key = match output_key(&result.tenant, &result.job_id, RESULT_FILE) {
            Ok(key) => key,
            Err(e) => {
                warn!(job_id = %result.job_id, "result not stored ({e}); publishing it without a manifest");
                return Step::Publish(result);
            }
        };
        match self.store.get(&key).await {
            Ok(Some(bytes)) => {
                if let Ok(existing) = serde_json::from_slice::<JobResult>(&bytes) {
                    if existing != result {
                        info!(job_id = %result.job_id, "a result was committed first; publishing that one");
                    }
                    return Step::Publish(existing);
                }
            }
            Ok(None) => {}
            Err(e) if e.is_transient() => return Step::Later(e.to_string()),
            Err(e) => {
                warn!(job_id = %result.job_id, "result not stored ({e}); publishing it without a manifest");
                return Step::Publish(result);
            }
        }
        let bytes = serde_json::to_vec_pretty(&result).expect("results serialise");
        let meta = ObjectMeta { content_type: "application/json".into(), ..Default::default() };
        match self.store.put_bytes(&key, &bytes, &meta).await {
            Ok(_) => Step::Publish(result),
            Err(e) if e.is_transient() => Step::Later(e.to_string()),
            Err(e) => {
                warn!(job_id = %result.job_id, "result not stored ({e}); publishing it without a manifest");
                Step::Publish(result)
            }
        }
    }
}

/// True for the name of an execution's output folder, `a{attempt}-{nonce}`.
pub fn is_execution_folder(name: &str) -> bool {
    name.strip_prefix('a').and_then(|rest| rest.split_once('-')).is_some_and(|(n, nonce)| {
        !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && !nonce.is_empty()
            && nonce.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_folders_are_recognised() {
        for ok in ["a1-0f3c9a2b", "a12-ab"] {
            assert!(is_execution_folder(ok), "{ok}");
        }
        for not in ["result.json", "attempt-1.json", "a-1", "a1-", "ax-12", "clip-01.mp4", "a1-xyz", "b1-ab"] {
            assert!(!is_execution_folder(not), "{not}");
        }
    }
}
