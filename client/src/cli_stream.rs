//! The tar of `grove stream-in` / `stream-out`: a file or stdin/stdout,
//! counted by a progress meter on stderr.

use crate::progress::Meter;
use crate::stdin::Stdin;
use grove_client::{api, writer_sink, Error};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tokio::io::AsyncReadExt;

/// An error of this command itself (no code: it is not groved's).
pub fn local(message: String) -> Error {
    Error {
        code: String::new(),
        message,
    }
}

/// A path, unless it is absent or "-" (stdin / stdout).
fn named(path: Option<&Path>) -> Option<&Path> {
    path.filter(|p| *p != Path::new("-"))
}

/// Where `stream-in` reads the tar.
pub struct Input {
    source: Source,
    name: String,
    meter: Meter,
}

/// A file, or stdin (read so that a failed stream ends the command at once,
/// whatever stdin is still to give: see `stdin`).
enum Source {
    File(tokio::fs::File),
    Stdin(Stdin),
}

/// Most bytes read from a file at once.
const CHUNK: usize = 256 * 1024;

impl Source {
    /// The next chunk; `None` at end of file.
    async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        match self {
            Source::File(file) => {
                let mut buffer = vec![0u8; CHUNK];
                let n = file.read(&mut buffer).await?;
                buffer.truncate(n);
                Ok((n > 0).then_some(buffer))
            }
            Source::Stdin(stdin) => stdin.next().await.transpose(),
        }
    }
}

impl Input {
    pub async fn open(path: Option<&Path>) -> Result<Input, Error> {
        if let Some(path) = named(path) {
            let name = path.display().to_string();
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| local(format!("opening {name}: {e}")))?;
            let meta = file.metadata().await.ok();
            let total = meta.filter(|m| m.is_file()).map(|m| m.len());
            return Ok(Input {
                source: Source::File(file),
                name,
                meter: Meter::new("streaming in", total),
            });
        }
        // A redirected file (`< archive.tar`) has a size worth showing.
        let total = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(std::fs::File::from)
            .and_then(|f| f.metadata())
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        let stdin = Stdin::start().map_err(|e| local(format!("reading stdin: {e}")))?;
        Ok(Input {
            source: Source::Stdin(stdin),
            name: "stdin".into(),
            meter: Meter::new("streaming in", total),
        })
    }

    /// Copy everything to `sink`, then `done`, whose answer (the
    /// extraction's outcome) is the result.
    pub async fn copy_to(mut self, sink: &api::byte_stream::Client) -> Result<(), Error> {
        let result = self.copy(sink).await;
        self.meter.finish();
        result
    }

    async fn copy(&mut self, sink: &api::byte_stream::Client) -> Result<(), Error> {
        while let Some(chunk) = self
            .source
            .next()
            .await
            .map_err(|e| local(format!("reading {}: {e}", self.name)))?
        {
            let mut request = sink.write_request();
            request.get().set_data(&chunk);
            request.send().await?;
            self.meter.add(chunk.len());
        }
        sink.done_request().send().promise.await?;
        Ok(())
    }
}

/// A writer that counts what passes through it on a meter.
struct Counting<W> {
    inner: W,
    meter: Rc<Meter>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.meter.add(n);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where `stream-out` writes the tar.
pub struct Output {
    sink: api::byte_stream::Client,
    file: Option<PathBuf>,
    meter: Rc<Meter>,
}

impl Output {
    pub fn create(path: Option<&Path>) -> Result<Output, Error> {
        let meter = Rc::new(Meter::new("streaming out", None));
        let (sink, file) = match named(path) {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .map_err(|e| local(format!("creating {}: {e}", path.display())))?;
                let writer = Counting {
                    inner: file,
                    meter: meter.clone(),
                };
                (writer_sink(writer).0, Some(path.to_path_buf()))
            }
            None => {
                let writer = Counting {
                    inner: std::io::stdout(),
                    meter: meter.clone(),
                };
                (writer_sink(writer).0, None)
            }
        };
        Ok(Output { sink, file, meter })
    }

    /// The ByteStream for streamOut.
    pub fn sink(&self) -> api::byte_stream::Client {
        self.sink.clone()
    }

    /// End the meter; when the stream failed, remove the file it was
    /// written to (a partial tar is no use).
    pub fn finish(self, result: Result<(), Error>) -> Result<(), Error> {
        self.meter.finish();
        if result.is_err() {
            if let Some(file) = &self.file {
                let _ = std::fs::remove_file(file);
            }
        }
        result
    }
}
