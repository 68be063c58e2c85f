//! `grove manpages DIR` (hidden): man pages from the CLI's own
//! definitions, for the Debian package (`./dev package`): grove.1 and one
//! page per subcommand, nested ones included (grove-image-pull.1), so
//! `man grove-create` shows what `grove create --help` shows.

use clap::CommandFactory;
use std::path::Path;

/// Write every page into `dir` (made if missing); the pages' names.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut cli = crate::Cli::command();
    cli.build();
    let mut written = Vec::new();
    write_tree(&cli, "grove", dir, &mut written)?;
    Ok(written)
}

fn write_tree(
    command: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<String>,
) -> std::io::Result<()> {
    // clap_mangen titles the page with the command's name: give a
    // subcommand its full one (grove-image-pull), as git's pages are named.
    let page = command.clone().display_name(name.to_string());
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .section("1")
        .source(concat!("grove ", env!("CARGO_PKG_VERSION")))
        .manual("Grove")
        .render(&mut text)?;
    let file = format!("{name}.1");
    std::fs::write(dir.join(&file), text)?;
    written.push(file);
    for sub in command.get_subcommands() {
        // help is clap's own; the hidden ones (this one) are not for users.
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_tree(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
