//! What the CLI says about itself: shell completions and man pages, generated from the
//! same `clap::Command` that parses the arguments, so neither can list a flag that does
//! not exist. The command value comes from main.rs; this module only renders it.

use std::io::Write;

pub use clap_complete::Shell;

/// Write the completion script for `shell` to `out`.
pub fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// The man page (section 1) of the top-level command, or of its subcommand `sub`, as
/// `ocilambda-build(1)`; `None` when there is no such subcommand.
///
/// Pages go to stdout only: a packager redirects each into its own file, and ocilambda
/// never writes into a directory it does not own (such as a man path).
pub fn manpage(
    cmd: clap::Command,
    sub: Option<&str>,
    out: &mut dyn Write,
) -> Option<std::io::Result<()>> {
    // Built first: that gives each subcommand its display name (`ocilambda-build`, the
    // page's title) and the version it inherits.
    let mut cmd = cmd.propagate_version(true);
    cmd.build();
    let page = match sub {
        None => cmd,
        Some(name) => cmd.find_subcommand(name)?.clone(),
    };
    Some(clap_mangen::Man::new(page).render(out))
}

/// The subcommands that have a page of their own.
pub fn subcommands(cmd: &clap::Command) -> Vec<String> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| s.get_name().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("tool")
            .version("1.2.3")
            .about("A tool")
            .subcommand(
                clap::Command::new("build")
                    .about("Build it")
                    .arg(clap::Arg::new("base").long("base")),
            )
    }

    fn render(sub: Option<&str>) -> Option<String> {
        let mut out = Vec::new();
        manpage(cli(), sub, &mut out)?.unwrap();
        Some(String::from_utf8(out).unwrap())
    }

    #[test]
    fn completions_name_the_subcommands_and_their_flags() {
        let mut out = Vec::new();
        completions(cli(), Shell::Bash, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("build"), "{text}");
        assert!(text.contains("--base"), "{text}");
    }

    #[test]
    fn the_top_page_lists_subcommands_and_a_subcommand_page_its_flags() {
        let top = render(None).unwrap();
        assert!(top.starts_with(".ie"), "{top}");
        assert!(top.contains("tool\\-build"), "{top}");
        let build = render(Some("build")).unwrap();
        assert!(
            build.contains(".TH tool-build 1 ") && build.contains("1.2.3"),
            "{build}"
        );
        assert!(build.contains("\\-\\-base"), "{build}");
        assert!(render(Some("nosuch")).is_none());
        assert_eq!(subcommands(&cli()), ["build"]);
    }
}
