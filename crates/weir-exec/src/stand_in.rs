//! Programs of images that weir carries stand-ins for, so that the local executor runs them.

use weir_core::run::TaskSpec;

/// Argo's test image `argoproj/argosay` runs its own program (`/argosay`, the image's
/// entrypoint): this weir binary carries a stand-in (`weir argosay`), run in its place with the
/// same arguments. `None` for any other image, or a command of the task's own.
pub(crate) fn argosay(task: &TaskSpec) -> Option<Vec<String>> {
    let image = task.image.as_deref()?;
    if !image.starts_with("argoproj/argosay") {
        return None;
    }
    let rest: Vec<String> = match task.command.split_first() {
        None => task.args.clone(),
        Some((p, more)) if p.trim_start_matches('/') == "argosay" => {
            more.iter().chain(&task.args).cloned().collect()
        }
        Some(_) => return None,
    };
    // this very binary, by the link the kernel keeps to it: its path may be out of the task's
    // view (a binary under /tmp, hidden by the task's private /tmp)
    Some(
        ["/proc/self/exe".to_string(), "argosay".to_string()]
            .into_iter()
            .chain(rest)
            .collect(),
    )
}
