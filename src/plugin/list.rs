//! `berth plugins`: the registry with each plugin's load status, as a
//! table for people or a JSON array for scripts.

use clap::{Parser, ValueEnum};

use super::PluginStatus;
use crate::config::ConfigArgs;

/// Flags of `berth plugins`.
#[derive(Debug, Parser)]
#[command(
    name = "berth plugins",
    about = "List the compiled-in plugins and whether each can work on this host",
    long_about = "List the compiled-in plugins and whether each can work on this host.\n\n\
                  Runs every plugin's init probe against the store root and its \
                  [plugins.<kind>.<id>] config table. STATUS is `ok`, or `error:` and \
                  the reason the plugin cannot be used."
)]
pub struct PluginsArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = PluginsFormat::Table)]
    pub format: PluginsFormat,
    #[command(flatten)]
    pub store: ConfigArgs,
}

/// Output formats of `berth plugins`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PluginsFormat {
    /// Aligned columns KIND, ID, CAPABILITIES, STATUS
    Table,
    /// One JSON array of {kind, id, capabilities, loaded, error}
    Json,
}

/// Columns KIND, ID, CAPABILITIES (comma-separated, `-` if none) and
/// STATUS (`ok` or `error: <reason>`), space-aligned, one line per plugin.
pub fn render_table(statuses: &[PluginStatus]) -> String {
    let header = ["KIND", "ID", "CAPABILITIES", "STATUS"].map(str::to_owned);
    let mut rows = vec![header];
    for status in statuses {
        let capabilities = if status.capabilities.is_empty() {
            "-".to_owned()
        } else {
            status.capabilities.join(",")
        };
        let state = match &status.error {
            None => "ok".to_owned(),
            Some(reason) => format!("error: {}", reason.replace('\n', " ")),
        };
        rows.push([
            status.kind.to_string(),
            status.id.to_owned(),
            capabilities,
            state,
        ]);
    }
    let mut widths = [0; 3];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (cell, width) in row.iter().zip(widths) {
            out.push_str(cell);
            out.push_str(&" ".repeat(width - cell.chars().count() + 3));
        }
        out.push_str(&row[3]);
        out.push('\n');
    }
    out
}

/// One pretty-printed JSON array, with a trailing newline.
pub fn render_json(statuses: &[PluginStatus]) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(statuses)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::PluginKind;

    fn sample() -> Vec<PluginStatus> {
        vec![
            PluginStatus {
                kind: PluginKind::Content,
                id: "local",
                capabilities: &["ingest", "resume"],
                loaded: true,
                error: None,
            },
            PluginStatus {
                kind: PluginKind::Snapshotter,
                id: "overlayfs",
                capabilities: &[],
                loaded: false,
                error: Some("no overlay\nin kernel".to_owned()),
            },
        ]
    }

    #[test]
    fn table_is_aligned() {
        let text = render_table(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "KIND          ID          CAPABILITIES    STATUS");
        assert_eq!(lines[1], "content       local       ingest,resume   ok");
        assert_eq!(
            lines[2],
            "snapshotter   overlayfs   -               error: no overlay in kernel"
        );
    }

    #[test]
    fn json_is_one_array() {
        let text = render_json(&sample()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let expected = serde_json::json!([
            {"kind": "content", "id": "local", "capabilities": ["ingest", "resume"],
             "loaded": true, "error": null},
            {"kind": "snapshotter", "id": "overlayfs", "capabilities": [],
             "loaded": false, "error": "no overlay\nin kernel"},
        ]);
        assert_eq!(value, expected);
    }
}
