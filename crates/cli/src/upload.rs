//! Streaming a file as a request body, with a progress bar on stderr (hidden when stderr is
//! not a terminal).

use std::fs::File;
use std::io::{Seek, SeekFrom};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncReadExt;

use crate::error::{CliError, CliResult};

/// A body that reads `file` from its start in chunks and advances the returned bar.
pub fn body_with_progress(file: &File, size: u64) -> CliResult<(reqwest::Body, ProgressBar)> {
    let mut file = file
        .try_clone()
        .map_err(|e| CliError::io("opening the package", e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| CliError::io("reading the package", e))?;
    let file = tokio::fs::File::from_std(file);
    let bar = ProgressBar::new(size);
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let progress = bar.clone();
    let stream = futures_util::stream::unfold(Some(file), move |state| {
        let progress = progress.clone();
        async move {
            let mut file = state?;
            let mut buf = vec![0u8; 64 * 1024];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    progress.inc(n as u64);
                    Some((Ok(bytes::Bytes::from(buf)), Some(file)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    Ok((reqwest::Body::wrap_stream(stream), bar))
}
