//! What a captured login or password change did, summed up for the one audit record its job
//! writes: each volume's outcome, and the job's result line. Words only; no I/O.

/// What a login or password change did on one volume.
#[derive(Debug)]
pub enum VolumeLogin {
    /// What happened there, for the record.
    Done(String),
    /// Nothing for this user, for a reason about the user rather than the volume (not managed,
    /// the system refused the password); nothing on the volume was touched.
    Refused(String),
    /// The event does not concern this kind of volume.
    Skipped,
}

/// The job's outcome from what it did before the volumes (`done`, such as bootstraps) and each
/// volume's outcome (named): the lines joined, or — when nothing was done anywhere and a
/// volume refused the user — that refusal, as the job's error.
pub fn summary(
    mut done: Vec<String>,
    outcomes: Vec<(String, Result<VolumeLogin, String>)>,
) -> Result<String, String> {
    let nothing_done = done.is_empty()
        && outcomes
            .iter()
            .all(|(_, o)| matches!(o, Ok(VolumeLogin::Refused(_) | VolumeLogin::Skipped)));
    if nothing_done {
        if let Some((_, Ok(VolumeLogin::Refused(why)))) = outcomes
            .iter()
            .find(|(_, o)| matches!(o, Ok(VolumeLogin::Refused(_))))
        {
            return Err(why.clone());
        }
    }
    done.extend(outcomes.into_iter().filter_map(|(v, o)| match o {
        Ok(VolumeLogin::Done(s)) => Some(format!("{v}: {s}")),
        Ok(VolumeLogin::Refused(why)) => Some(format!("{v}: nothing done: {why}")),
        Ok(VolumeLogin::Skipped) => None,
        Err(e) => Some(format!("{v}: failed: {e}")),
    }));
    Ok(done.join("; "))
}

/// The `result` of a job's audit record; `folded` later events were folded into it.
pub fn job_result(outcome: Result<String, String>, folded: u32) -> String {
    match (outcome, folded) {
        (Ok(done), 0) => format!("ok: {done}"),
        (Ok(done), n) => format!("ok: {done} (and {n} earlier event(s) folded in)"),
        (Err(why), _) => format!("error:Refused: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(v: &str, o: Result<VolumeLogin, String>) -> (String, Result<VolumeLogin, String>) {
        (v.to_owned(), o)
    }

    #[test]
    fn a_refusal_with_nothing_done_anywhere_is_the_jobs_error() {
        let outcomes = vec![
            on(
                "root",
                Ok(VolumeLogin::Refused("not managed (deleted)".into())),
            ),
            on("mac", Ok(VolumeLogin::Skipped)),
        ];
        assert_eq!(
            summary(Vec::new(), outcomes),
            Err("not managed (deleted)".into())
        );
        assert_eq!(
            job_result(Err("not managed (deleted)".into()), 3),
            "error:Refused: not managed (deleted)"
        );
    }

    #[test]
    fn otherwise_each_volume_says_what_it_did() {
        let outcomes = vec![
            on("root", Ok(VolumeLogin::Done("slot 3 works".into()))),
            on("data", Ok(VolumeLogin::Refused("no".into()))),
            on("mac", Ok(VolumeLogin::Skipped)),
            on("usb", Err("busy".into())),
        ];
        let s = summary(vec!["root: bootstrapped".into()], outcomes).expect("done");
        assert_eq!(
            s,
            "root: bootstrapped; root: slot 3 works; data: nothing done: no; usb: failed: busy"
        );
        assert_eq!(job_result(Ok(s.clone()), 0), format!("ok: {s}"));
        assert_eq!(
            job_result(Ok("x".into()), 2),
            "ok: x (and 2 earlier event(s) folded in)"
        );
        // A failure is not a refusal: the job still reports what it did.
        let failed = vec![on("usb", Err("busy".into()))];
        assert_eq!(summary(Vec::new(), failed), Ok("usb: failed: busy".into()));
    }
}
