//! Scenario files (TOML) read into typed steps (`crate::steps`), then
//! checked as a plan: each step's own `check` sees the machine's state and
//! what earlier steps served or armed, so an authoring mistake is an input
//! error before anything boots. The file is data. Unknown steps and fields are
//! refused with `file:line:column`, the field and what was expected: each
//! `[[step]]` table is deserialized on its own against its variant's struct,
//! so toml's spans stay exact. Parsing never boots anything.

use crate::error::{InputError, Result};
use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::steps::{Dur, Pattern, Source, Step, ACTIONS};

/// `[provision]`: the run starts the provisioning service (in-process,
/// its database in the run directory) with these install profiles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionSpec {
    pub profiles: Vec<ProfileSpec>,
}

/// One install profile: the image recipe it installs (its disk, gzip'd,
/// with its SHA-256).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    pub name: toml::Spanned<String>,
    pub image: toml::Spanned<String>,
    /// Serve an image whose bytes do not match the profile's checksum (a
    /// download corrupted on the way): the agent must refuse it.
    #[serde(default)]
    pub corrupt_image: bool,
}

/// Which events a scenario's snapshot holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotEvents {
    #[default]
    All,
    Steps,
}

/// What the board's disk holds at the first power-on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskStart {
    /// The scenario's image.
    #[default]
    Image,
    /// Nothing (all zeroes): a bare node waiting to be provisioned.
    Blank,
}

/// A step with where it was written.
#[derive(Debug, Clone)]
pub struct PlacedStep {
    pub step: Step,
    /// 1-based line of the step's `[[step]]` header.
    pub line: usize,
    /// Byte offset of that header in the file.
    pub offset: usize,
    /// The step's table as canonical JSON (no comments, no layout): what a
    /// checkpoint key hashes.
    pub canonical: String,
}

/// The `[scenario]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub boards: Vec<toml::Spanned<String>>,
    /// The image recipe (`images/recipes/<image>.toml`).
    #[serde(default = "base")]
    pub image: toml::Spanned<String>,
    /// What the disk holds at the first power-on: the image, or nothing
    /// (`blank`: a bare node the scenario provisions over the network; the
    /// image is then what it ends up running).
    #[serde(default)]
    pub disk: DiskStart,
    /// Bound on the whole run.
    #[serde(default = "default_run_timeout")]
    pub timeout: Dur,
    /// Console patterns that fail the run at once.
    #[serde(default = "default_bad_patterns")]
    pub bad_patterns: Vec<Pattern>,
    /// Board features the scenario relies on (`"watchdog"`): a board that
    /// lacks one is refused before anything boots.
    #[serde(default)]
    pub needs: Vec<String>,
    /// What the timeline snapshot holds: every event (`all`, the default),
    /// or only the steps' own (`steps`: for scenarios whose fault lands
    /// either side of a write by design, where console markers differ
    /// between equally good outcomes that the steps assert).
    #[serde(default)]
    pub snapshot: SnapshotEvents,
    /// Parameters: every combination of their values is its own run (see
    /// `Scenario::variants`).
    #[serde(default)]
    pub matrix: BTreeMap<String, Vec<toml::Value>>,
}

fn base() -> toml::Spanned<String> {
    toml::Spanned::new(0..0, "base".to_string())
}
fn default_run_timeout() -> Dur {
    Dur(Duration::from_secs(300))
}
fn default_bad_patterns() -> Vec<Pattern> {
    vec![Pattern("Kernel panic".into()), Pattern("Unknown command".into())]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    scenario: Header,
    #[serde(default)]
    provision: Option<ProvisionSpec>,
    #[serde(default)]
    step: Vec<toml::Spanned<toml::Table>>,
}

/// A parsed scenario file.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    pub header: Header,
    pub provision: Option<ProvisionSpec>,
    pub steps: Vec<PlacedStep>,
    /// The matrix values this variant runs with (`param` -> value name).
    pub variant: Vec<(String, String)>,
    text: String,
}

/// One value of a matrix parameter: `{param}` gives its name, `{param.key}`
/// one of its fields (a table value's other keys).
#[derive(Debug, Clone)]
struct MatrixValue {
    name: String,
    fields: BTreeMap<String, String>,
}

fn matrix_scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A matrix value is put into the scenario text as-is, inside a string:
/// it must not be able to end that string or the line.
fn matrix_safe(s: &str) -> bool {
    !s.chars().any(|c| matches!(c, '\'' | '"' | '\\' | '\n' | '\r'))
}

impl Scenario {
    /// Every variant of a scenario file: the file itself without a
    /// `[scenario.matrix]`, else one scenario per combination of the matrix
    /// values, named `<name>.<param>=<value>...`, with `{param}` and
    /// `{param.key}` substituted in the steps.
    pub fn load_variants(path: &Path) -> Result<Vec<Scenario>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| InputError::new(path, format!("cannot read scenario: {e}")))?;
        Self::variants(path, text)
    }

    pub fn variants(path: &Path, text: String) -> Result<Vec<Scenario>> {
        let raw: Raw = toml::from_str(&text).map_err(|e| InputError::from_toml(path, &text, 0, &e))?;
        if raw.scenario.matrix.is_empty() {
            return Ok(vec![Self::parse(path, text)?]);
        }
        let at = |key: &str, msg: String| -> crate::error::Error {
            let offset = crate::board::find_key(&text, key).unwrap_or(0);
            InputError::new(path, msg).at(&text, offset).field(format!("matrix.{key}")).into()
        };
        let mut params: Vec<(String, Vec<MatrixValue>)> = Vec::new();
        for (name, values) in &raw.scenario.matrix {
            let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !plain || name == "arch" || name == "board" {
                return Err(at(
                    name,
                    format!("`{name}` cannot be a matrix parameter (plain names; not arch or board)"),
                ));
            }
            if values.is_empty() {
                return Err(at(name, format!("`{name}` has no values")));
            }
            let mut list = Vec::new();
            for v in values {
                let value = match v {
                    toml::Value::Table(t) => {
                        let Some(name_v) = t.get("name").and_then(matrix_scalar) else {
                            return Err(at(name, format!("a table value of `{name}` needs a `name`")));
                        };
                        let mut fields = BTreeMap::new();
                        for (k, fv) in t {
                            let Some(f) = matrix_scalar(fv) else {
                                return Err(at(name, format!("`{name}.{k}`: only strings, integers and booleans")));
                            };
                            fields.insert(k.clone(), f);
                        }
                        MatrixValue { name: name_v, fields }
                    }
                    v => match matrix_scalar(v) {
                        Some(s) => MatrixValue { name: s, fields: BTreeMap::new() },
                        None => {
                            return Err(at(name, format!("`{name}`: values are strings, integers, booleans or tables")))
                        }
                    },
                };
                let all_safe = matrix_safe(&value.name) && value.fields.values().all(|f| matrix_safe(f));
                if !all_safe {
                    return Err(at(name, format!("`{name}`: a value may not contain quotes, backslashes or newlines")));
                }
                if list.iter().any(|o: &MatrixValue| o.name == value.name) {
                    return Err(at(name, format!("`{name}`: value `{}` twice", value.name)));
                }
                list.push(value);
            }
            params.push((name.clone(), list));
        }
        // The steps start at the first [[step]]: the header keeps its text.
        let steps_at = text.find("\n[[step]]").map_or(0, |i| i + 1);
        let mut combos: Vec<Vec<(String, MatrixValue)>> = vec![Vec::new()];
        for (name, values) in &params {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((name.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        let placeholder = Regex::new(r"\{([A-Za-z0-9_]+)(?:\.([A-Za-z0-9_]+))?\}").expect("static regex");
        let mut out = Vec::new();
        for combo in combos {
            let mut body = String::with_capacity(text.len());
            let mut last = steps_at;
            for m in placeholder.captures_iter(&text[steps_at..]) {
                let whole = m.get(0).expect("match");
                let Some((_, value)) = combo.iter().find(|(n, _)| n == &m[1]) else { continue };
                let got = match m.get(2) {
                    None => Some(&value.name),
                    Some(k) => value.fields.get(k.as_str()),
                };
                let Some(got) = got else {
                    return Err(InputError::new(
                        path,
                        format!("`{}`: value `{}` of `{}` has no field `{}`", whole.as_str(), value.name, &m[1], &m[2]),
                    )
                    .at(&text, steps_at + whole.start())
                    .field("matrix")
                    .into());
                };
                body.push_str(&text[last..steps_at + whole.start()]);
                body.push_str(got);
                last = steps_at + whole.end();
            }
            let substituted = format!("{}{body}{}", &text[..steps_at], &text[last..]);
            let mut s = Self::parse(path, substituted)?;
            let label: Vec<String> = combo.iter().map(|(n, v)| format!("{n}={}", v.name)).collect();
            s.header.name = format!("{}.{}", s.header.name, label.join("."));
            s.variant = combo.into_iter().map(|(n, v)| (n, v.name)).collect();
            out.push(s);
        }
        Ok(out)
    }

    pub fn parse(path: &Path, text: String) -> Result<Scenario> {
        let raw: Raw = toml::from_str(&text).map_err(|e| InputError::from_toml(path, &text, 0, &e))?;
        let mut steps: Vec<PlacedStep> = Vec::new();
        for spanned in &raw.step {
            let span = spanned.span();
            let at = |msg: String, field: &str| InputError::new(path, msg).at(&text, span.start).field(field);
            let action = match spanned.get_ref().get("action") {
                Some(toml::Value::String(a)) => a.clone(),
                Some(_) => return Err(at("`action` must be a string".into(), "action").into()),
                None => {
                    return Err(at(format!("missing field `action` (one of: {})", ACTIONS.join(", ")), "action").into())
                }
            };
            // Parse the step's own text with its header and `action` line
            // blanked out (same length), so spans still point into the file.
            let slice = blank_header_and_action(&text[span.clone()]);
            match Step::parse(&action, &slice) {
                Ok(Some(step)) => steps.push(PlacedStep {
                    step,
                    line: crate::error::line_col(&text, span.start).0,
                    offset: span.start,
                    canonical: serde_json::to_string(spanned.get_ref()).unwrap_or_default(),
                }),
                Ok(None) => {
                    let offset = text[span.clone()].find("action").map_or(span.start, |o| span.start + o);
                    return Err(InputError::new(
                        path,
                        format!("unknown action `{action}`, expected one of: {}", ACTIONS.join(", ")),
                    )
                    .at(&text, offset)
                    .field("action")
                    .into());
                }
                Err(e) => return Err(InputError::from_toml(path, &text, span.start, &e).into()),
            }
        }
        if steps.is_empty() {
            return Err(InputError::new(path, "a scenario needs at least one [[step]]")
                .at(&text, text.trim_end().len())
                .field("step")
                .into());
        }
        // Step spans are relative to each step's own text; `image` fields
        // were parsed from a blanked copy of the same length, so they point
        // into the file too.
        for (placed, spanned) in steps.iter_mut().zip(&raw.step) {
            if let Some(image) = placed.step.image_mut() {
                let span = image.span();
                let base = spanned.span().start;
                *image = toml::Spanned::new(base + span.start..base + span.end, image.get_ref().clone());
            }
        }
        if raw.scenario.boards.is_empty() {
            let offset = crate::board::find_key(&text, "boards").unwrap_or(0);
            return Err(InputError::new(path, "name at least one board").at(&text, offset).field("boards").into());
        }
        let scenario = Scenario {
            path: path.to_path_buf(),
            header: raw.scenario,
            provision: raw.provision,
            steps,
            variant: Vec::new(),
            text,
        };
        scenario.check_provision(path)?;
        scenario.check_steps(&raw.step)?;
        Ok(scenario)
    }

    pub fn name(&self) -> &str {
        &self.header.name
    }

    /// Each step's own check, in order, with the machine's state and what
    /// earlier steps served as the plan goes: authoring mistakes are input
    /// errors at the step's field before anything boots.
    fn check_steps(&self, raw: &[toml::Spanned<toml::Table>]) -> Result<()> {
        let root = crate::rundir::workspace_root();
        // The partitions of the scenario's disk: A/B slots, or an OSTree sysroot.
        let is_ostree = self
            .recipe_path(&root)
            .ok()
            .and_then(|r| devlab_images::Recipe::load(&r).ok())
            .is_some_and(|(r, _)| r.ostree.is_some());
        let disk_labels: &'static [&'static str] =
            if is_ostree { &devlab_images::disk::OSTREE_LABELS } else { &devlab_images::disk::LABELS };
        let mut cx = crate::steps::CheckCx {
            scenario: self,
            root,
            span: 0..0,
            action: "",
            power: crate::steps::Power::Never,
            disk_labels,
            bundles: Vec::new(),
            server: false,
            checkpoint_seen: false,
            disk_errors_seen: false,
            armed: 0,
            refused: Vec::new(),
        };
        for (placed, spanned) in self.steps.iter().zip(raw) {
            cx.span = spanned.span();
            cx.action = placed.step.action();
            placed.step.check(&mut cx)?;
        }
        if cx.armed > 0 {
            let last = raw.last().map_or(0, |s| s.span().start);
            return Err(InputError::new(&self.path, "a fault is armed but no wait_fault waits for it")
                .at(&self.text, last)
                .field("action")
                .into());
        }
        Ok(())
    }

    /// The names of the `[provision]` profiles.
    pub fn profile_names(&self) -> impl Iterator<Item = &str> {
        self.provision.iter().flat_map(|p| p.profiles.iter().map(|x| x.name.get_ref().as_str()))
    }

    /// `[provision]`: profile names plain and unique, images that exist;
    /// a blank disk only with a provisioning service to fill it.
    fn check_provision(&self, path: &Path) -> Result<()> {
        let root = crate::rundir::workspace_root();
        let at = |offset: usize, field: &str, msg: String| -> crate::error::Error {
            InputError::new(path, msg).at(&self.text, offset).field(field).into()
        };
        if self.header.disk == DiskStart::Blank && self.provision.is_none() {
            let offset = crate::board::find_key(&self.text, "disk").unwrap_or(0);
            return Err(at(offset, "disk", "a blank disk needs a [provision] table to install it".into()));
        }
        let Some(spec) = &self.provision else { return Ok(()) };
        if spec.profiles.is_empty() {
            let offset = crate::board::find_key(&self.text, "profiles").unwrap_or(0);
            return Err(at(offset, "provision.profiles", "name at least one profile".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &spec.profiles {
            let name = p.name.get_ref();
            let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
            if !plain {
                return Err(at(
                    p.name.span().start,
                    "provision.profiles.name",
                    format!("{name:?} is not a plain name"),
                ));
            }
            if !seen.insert(name) {
                return Err(at(p.name.span().start, "provision.profiles.name", format!("profile `{name}` twice")));
            }
            self.recipe_for(&root, &p.image)?;
        }
        Ok(())
    }

    /// Boards named in the file, resolved to profiles; an unknown one is an
    /// input error pointing at its entry.
    pub fn resolve_boards(&self) -> Result<Vec<crate::board::Board>> {
        self.header.boards.iter().map(|b| self.resolve_board(b)).collect()
    }

    fn resolve_board(&self, b: &toml::Spanned<String>) -> Result<crate::board::Board> {
        let board = crate::board::find(b.get_ref()).map_err(|e| match e {
            crate::error::Error::Input(ie) if !ie.file.exists() => {
                InputError::new(&self.path, ie.message).at(&self.text, b.span().start).field("boards").into()
            }
            other => other,
        })?;
        self.check_board(&board)?;
        Ok(board)
    }

    /// Refuse a board that lacks a feature the scenario `needs`, has no
    /// U-Boot for a `boot` step, or cannot boot from the network to fill a
    /// blank disk.
    pub fn check_board(&self, board: &crate::board::Board) -> Result<()> {
        let refuse = |key: &str, msg: String| -> crate::error::Error {
            let offset = crate::board::find_key(&self.text, key).unwrap_or(0);
            InputError::new(&self.path, msg).at(&self.text, offset).field(key).into()
        };
        if self.header.disk == DiskStart::Blank && board.pxe.is_none() {
            return Err(refuse(
                "disk",
                format!("a blank disk needs a board that boots from the network; `{}` does not (no `pxe`)", board.name),
            ));
        }
        if board.uboot().is_none() {
            if let Some(p) = self.steps.iter().find(|p| matches!(p.step, Step::Boot(_))) {
                let offset = p.offset;
                return Err(InputError::new(
                    &self.path,
                    format!("board `{}` has no U-Boot to stop (`boot` step)", board.name),
                )
                .at(&self.text, offset)
                .field("action")
                .into());
            }
        }
        for need in &self.header.needs {
            let ok = match need.as_str() {
                "watchdog" => board.watchdog.is_some(),
                other => {
                    let offset = self.text.find(&format!("\"{other}\"")).unwrap_or(0);
                    return Err(InputError::new(&self.path, format!("unknown need `{other}` (known: watchdog)"))
                        .at(&self.text, offset)
                        .field("needs")
                        .into());
                }
            };
            if !ok {
                let offset = crate::board::find_key(&self.text, "needs").unwrap_or(0);
                return Err(InputError::new(
                    &self.path,
                    format!("board `{}` has no {need} (its profile {} sets none)", board.name, board.path.display()),
                )
                .at(&self.text, offset)
                .field("needs")
                .into());
            }
        }
        Ok(())
    }

    /// The image recipe path, or an input error at the `image` field.
    pub fn recipe_path(&self, root: &Path) -> Result<PathBuf> {
        self.recipe_for(root, &self.header.image)
    }

    /// Like [`Scenario::recipe_for`], and the recipe must be an OSTree image.
    pub fn ostree_recipe(&self, root: &Path, image: &toml::Spanned<String>) -> Result<PathBuf> {
        let path = self.recipe_for(root, image)?;
        let is_ostree = devlab_images::Recipe::load(&path)?.0.ostree.is_some();
        if !is_ostree {
            return Err(InputError::new(
                &self.path,
                format!(
                    "image `{}` is not an OSTree image ({} has no [ostree] table)",
                    image.get_ref(),
                    path.display()
                ),
            )
            .at(&self.text, image.span().start)
            .field("image")
            .into());
        }
        Ok(path)
    }

    /// The last build of the image a (spanned) `image` field names, for
    /// `arch`; one that is not built (or stale) is an input error at that
    /// field, saying how to build it.
    pub fn built_image(
        &self,
        root: &Path,
        image: &toml::Spanned<String>,
        arch: devlab_images::Arch,
    ) -> Result<devlab_images::BuiltImage> {
        locate_image(&self.path, &self.text, root, image, arch)
    }

    /// Every `image` a step serves (releases, bundles, OSTree commits) or
    /// a `[provision]` profile installs.
    pub fn served_images(&self) -> Vec<&toml::Spanned<String>> {
        self.steps
            .iter()
            .filter_map(|p| p.step.image())
            .chain(self.provision.iter().flat_map(|p| p.profiles.iter().map(|x| &x.image)))
            .collect()
    }

    /// The recipe named by a (spanned) `image` field anywhere in the file.
    pub fn recipe_for(&self, root: &Path, image: &toml::Spanned<String>) -> Result<PathBuf> {
        recipe_for(&self.path, &self.text, root, image)
    }

    /// The file's text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The recipe a (spanned) `image` field of `file` names; an input error at
/// that field if there is none.
pub fn recipe_for(file: &Path, text: &str, root: &Path, image: &toml::Spanned<String>) -> Result<PathBuf> {
    let name = image.get_ref();
    let path = root.join("images").join("recipes").join(format!("{name}.toml"));
    if path.is_file() {
        return Ok(path);
    }
    Err(InputError::new(file, format!("no image recipe `{name}` ({} does not exist)", path.display()))
        .at(text, image.span().start)
        .field("image")
        .into())
}

/// The built image a (spanned) `image` field of `file` names, for `arch`;
/// an input error at that field if it is not built (or stale).
pub fn locate_image(
    file: &Path,
    text: &str,
    root: &Path,
    image: &toml::Spanned<String>,
    arch: devlab_images::Arch,
) -> Result<devlab_images::BuiltImage> {
    let recipe = recipe_for(file, text, root, image)?;
    devlab_images::locate(&recipe, arch).map_err(|e| match e {
        devlab_images::ImageError::NotBuilt { .. } | devlab_images::ImageError::Stale { .. } => {
            InputError::new(file, e.to_string()).at(text, image.span().start).field("image").into()
        }
        other => other.into(),
    })
}

/// Is `path` a scenario file? (`*.toml`, but not a crate's `Cargo.toml`.)
pub fn is_scenario_file(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "toml") && path.file_name().is_some_and(|n| n != "Cargo.toml")
}

fn blank_header_and_action(slice: &str) -> String {
    let mut out = String::with_capacity(slice.len());
    for line in slice.split_inclusive('\n') {
        let t = line.trim_start();
        let is_action = t.strip_prefix("action").is_some_and(|r| r.trim_start().starts_with('='));
        if t.starts_with("[[") || is_action {
            out.extend(line.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario> {
        Scenario::parse(Path::new("s.toml"), text.to_string())
    }

    const HEAD: &str = "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64\"]\n\n";
    /// Four lines that leave the machine on with SSH up.
    const SSH_UP: &str = "[[step]]\naction = \"power_on\"\n[[step]]\naction = \"wait_ssh\"\n";
    /// Four lines that leave the machine off with a disk.
    const OFF: &str = "[[step]]\naction = \"power_on\"\n[[step]]\naction = \"power_cut\"\n";

    #[test]
    fn steps_parse_in_order() {
        let s = parse(&format!(
            "{HEAD}[[step]]\naction = \"power_on\"\n\n[[step]]\naction = \"expect\"\npattern = 'slot (?<s>[AB])'\ntimeout = \"5s\"\n"
        ))
        .unwrap();
        assert_eq!(s.steps.len(), 2);
        assert_eq!(s.steps[1].line, 8);
        match &s.steps[1].step {
            Step::Expect(e) => assert_eq!(e.timeout.0, Duration::from_secs(5)),
            other => panic!("{other:?}"),
        }
    }

    const PXE_HEAD: &str = "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64-pxe\"]\ndisk = \"blank\"\n\n";

    #[test]
    fn provision_steps_and_profiles_are_checked() {
        let prov = "[provision]\nprofiles = [{ name = \"ab\", image = \"base\" }]\n\n";
        let ok = parse(&format!(
            "{PXE_HEAD}{prov}[[step]]\naction = \"provision_assign\"\nprofile = \"ab\"\n\n[[step]]\naction = \"provision_wait\"\nstate = \"INSTALLED\"\n"
        ))
        .unwrap();
        assert_eq!(ok.profile_names().collect::<Vec<_>>(), ["ab"]);
        assert_eq!(ok.header.disk, DiskStart::Blank);

        let err = parse(&format!("{PXE_HEAD}[[step]]\naction = \"power_on\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:4:1: field `disk`: a blank disk needs a [provision] table"), "{err}");

        let err = parse(&format!("{HEAD}[[step]]\naction = \"provision_table\"\n")).unwrap_err().to_string();
        assert!(err.contains("provision_table needs a [provision] table"), "{err}");

        let err = parse(&format!("{PXE_HEAD}{prov}[[step]]\naction = \"provision_assign\"\nprofile = \"nope\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:11:1: field `profile`: no profile `nope` in [provision] (known: ab)"), "{err}");

        let err = parse(&format!("{PXE_HEAD}{prov}[[step]]\naction = \"provision_wait\"\nstate = \"DONE\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `state`: unknown variant `DONE`"), "{err}");

        let err = parse(&format!(
            "{PXE_HEAD}{prov}[[step]]\naction = \"provision_fault\"\nendpoint = \"profile\"\nfault = \"hang\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("field `seconds`: a hang needs `seconds`"), "{err}");

        let err = parse(&format!(
            "{PXE_HEAD}{prov}[[step]]\naction = \"provision_restart\"\nremove_profiles = [\"ab\", \"abc\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("s.toml:11:1: field `remove_profiles`: no profile `abc` in [provision] (known: ab)"),
            "{err}"
        );

        let dup =
            "[provision]\nprofiles = [{ name = \"ab\", image = \"base\" },\n  { name = \"ab\", image = \"v2\" }]\n\n";
        let err = parse(&format!("{PXE_HEAD}{dup}[[step]]\naction = \"power_on\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:8:12: field `provision.profiles.name`: profile `ab` twice"), "{err}");

        let missing = "[provision]\nprofiles = [{ name = \"ab\", image = \"no-such\" }]\n\n";
        let err = parse(&format!("{PXE_HEAD}{missing}[[step]]\naction = \"power_on\"\n")).unwrap_err().to_string();
        assert!(err.contains("field `image`: no image recipe `no-such`"), "{err}");
    }

    #[test]
    fn boards_without_network_boot_or_uboot_are_refused() {
        let prov = "[provision]\nprofiles = [{ name = \"ab\", image = \"base\" }]\n\n";
        let s = parse(&format!("{PXE_HEAD}{prov}[[step]]\naction = \"power_on\"\n")).unwrap();
        let uboot_board = crate::board::find("qemu-x86_64").unwrap();
        let err = s.check_board(&uboot_board).unwrap_err().to_string();
        assert!(err.contains("field `disk`: a blank disk needs a board that boots from the network"), "{err}");
        let pxe_board = crate::board::find("qemu-x86_64-pxe").unwrap();
        s.check_board(&pxe_board).unwrap();

        let s = parse(&format!("{HEAD}[[step]]\naction = \"power_on\"\n\n[[step]]\naction = \"boot\"\n")).unwrap();
        let err = s.check_board(&pxe_board).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:8:1: field `action`: board `qemu-x86_64-pxe` has no U-Boot"), "{err}");
    }

    #[test]
    fn unknown_field_points_at_its_line() {
        let err = parse(&format!("{HEAD}[[step]]\naction = \"expect\"\npatern = \"x\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:7:1: field `patern`: unknown field `patern`"), "{err}");
    }

    #[test]
    fn unknown_action_lists_the_known_ones() {
        let err = parse(&format!("{HEAD}[[step]]\naction = \"explode\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:6:1: field `action`: unknown action `explode`"), "{err}");
        assert!(err.contains("power_on"), "{err}");
    }

    #[test]
    fn ostree_steps_name_ostree_images() {
        // The scenario's own image (base) is not an OSTree image.
        let err = parse(&format!("{HEAD}[[step]]\naction = \"serve_ostree\"\nimage = \"ostree-v2\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `image`: image `base` is not an OSTree image"), "{err}");
        let head = HEAD.replace("[scenario]\n", "[scenario]\nimage = \"ostree\"\n");
        let err =
            parse(&format!("{head}[[step]]\naction = \"serve_ostree\"\nimage = \"v2\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:8:9: field `image`: image `v2` is not an OSTree image"), "{err}");
        let err =
            parse(&format!("{head}[[step]]\naction = \"serve_ostree\"\nimage = \"nope\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:8:9: field `image`: no image recipe `nope`"), "{err}");
        let err = parse(&format!(
            "{head}{SSH_UP}[[step]]\naction = \"assert_ostree\"\ndeployments = [{{ image = \"ostree-v9\", state = \"booted\" }}]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("s.toml:12:1: field `deployments`: `ostree-v9` is not an OSTree image recipe"),
            "{err}"
        );
        let err = parse(&format!(
            "{head}{SSH_UP}[[step]]\naction = \"assert_ostree\"\ndeployments = [{{ image = \"ostree\", state = \"up\" }}]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown variant `up`"), "{err}");
        // An OSTree disk has a sysroot, not root slots.
        parse(&format!("{head}{OFF}[[step]]\naction = \"corrupt_disk\"\npartition = \"sysroot\"\n")).unwrap();
        let err = parse(&format!("{head}{OFF}[[step]]\naction = \"corrupt_disk\"\npartition = \"rootfs-a\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no partition `rootfs-a` (the disk has: boot, uboot-env-a, uboot-env-b, sysroot)"),
            "{err}"
        );
        let err = parse(&format!(
            "{HEAD}{SSH_UP}[[step]]\naction = \"ssh\"\ncommand = \"x\"\npower_cut_at = 'a'\nlink_drop = {{ on_request = 'b', seconds = 1 }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("s.toml:13:1: field `link_drop`: set one of power_cut_at"), "{err}");
        parse(&format!(
            "{head}[[step]]\naction = \"serve_ostree\"\nimage = \"ostree-v2\"\n\n\
             {SSH_UP}[[step]]\naction = \"assert_ostree\"\ndeployments = [{{ image = \"ostree-v2\", state = \"pending\" }}]\n"
        ))
        .unwrap();
    }

    #[test]
    fn rauc_install_needs_a_bundle_served_before_it() {
        let text = format!(
            "{HEAD}{SSH_UP}[[step]]\naction = \"rauc_install\"\nbundle = \"v2\"\n\n\
             [[step]]\naction = \"serve_bundle\"\nname = \"v2\"\nimage = \"rauc-v2\"\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:11:1: field `bundle`: no bundle `v2` served"), "{err}");
        let err = parse(&format!("{HEAD}[[step]]\naction = \"serve_bundle\"\nname = \"x\"\nimage = \"nope\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:8:9: field `image`: no image recipe `nope`"), "{err}");
        let err = parse(&format!(
            "{HEAD}[[step]]\naction = \"serve_bundle\"\nname = \"x\"\nimage = \"rauc\"\nsigner = \"me\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("s.toml:9:10:") && err.contains("unknown variant `me`"), "{err}");
    }

    #[test]
    fn disk_fault_steps_name_a_real_partition() {
        let err = parse(&format!("{HEAD}{OFF}[[step]]\naction = \"disk_errors\"\npartition = \"rootfs-c\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:11:1: field `partition`: no partition `rootfs-c`"), "{err}");
        assert!(err.contains("rootfs-b"), "{err}");
        let err =
            parse(&format!("{HEAD}{OFF}[[step]]\naction = \"disk_errors\"\npartition = \"data\"\nerrno = \"EPERM\"\n"))
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("s.toml:12:9:") && err.contains("unknown variant `EPERM`"), "{err}");
        let err = parse(&format!("{HEAD}{OFF}[[step]]\naction = \"corrupt_disk\"\npartition = \"env\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:11:1: field `partition`"), "{err}");
        parse(&format!("{HEAD}{OFF}[[step]]\naction = \"disk_errors\"\npartition = \"rootfs-b\"\niotype = \"read\"\n"))
            .unwrap();
    }

    #[test]
    fn transfers_are_checked_before_booting() {
        let err = parse(&format!("{HEAD}{SSH_UP}[[step]]\naction = \"upload\"\nfrom = \"no/such\"\nto = \"/run/x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:11:1: field `from`: no file `no/such`"), "{err}");
        let err = parse(&format!("{HEAD}{SSH_UP}[[step]]\naction = \"download\"\nfrom = \"/etc/x\"\nto = \"../x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.toml:12:1: field `to`:") && err.contains("plain file name"), "{err}");
        let err = parse(&format!("{HEAD}{SSH_UP}[[step]]\naction = \"wait_qmp\"\n")).unwrap_err().to_string();
        assert!(err.contains("missing field `event`"), "{err}");
    }

    #[test]
    fn a_matrix_makes_one_scenario_per_combination() {
        let text = "[scenario]\nname = \"m\"\nboards = [\"qemu-x86_64\"]\n\n[scenario.matrix]\n\
                    copy = [{ name = \"a\", part = \"uboot-env-a\" }, { name = \"b\", part = \"uboot-env-b\" }]\n\
                    wait = [\"1s\", 2]\n\n\
                    [[step]]\naction = \"power_on\"\n[[step]]\naction = \"power_cut\"\n\
                    [[step]]\naction = \"corrupt_disk\"\npartition = \"{copy.part}\"\n\n\
                    [[step]]\naction = \"power_on\"\n\n[[step]]\naction = \"expect\"\npattern = 'env {copy} on {arch}'\ntimeout = \"{wait}\"\n";
        // `2` is not a duration: that variant's error points at its line.
        let err = Scenario::variants(Path::new("s.toml"), text.to_string()).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:23:11:") && err.contains("not a duration"), "{err}");
        let text = text.replace("wait = [\"1s\", 2]", "wait = [\"1s\", \"2s\"]");
        let all = Scenario::variants(Path::new("s.toml"), text).unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["m.copy=a.wait=1s", "m.copy=a.wait=2s", "m.copy=b.wait=1s", "m.copy=b.wait=2s"]);
        let Step::CorruptDisk(c) = &all[3].steps[2].step else { panic!() };
        assert_eq!(c.partition, "uboot-env-b");
        let Step::Expect(e) = &all[3].steps[4].step else { panic!() };
        // Placeholders that are not parameters ({arch}) stay for the runner.
        assert_eq!((e.pattern.0.as_str(), e.timeout.0), ("env b on {arch}", Duration::from_secs(2)));
        assert_eq!(all[2].variant, [("copy".to_string(), "b".to_string()), ("wait".to_string(), "1s".to_string())]);
        assert!(Scenario::load_variants(Path::new("/nonexistent.toml")).is_err());
    }

    #[test]
    fn bad_matrices_are_refused_where_they_are_written() {
        let head = "[scenario]\nname = \"m\"\nboards = [\"qemu-x86_64\"]\n[scenario.matrix]\n";
        let step = "\n[[step]]\naction = \"expect\"\npattern = '{x.nope}'\n";
        let v = |m: &str| Scenario::variants(Path::new("s.toml"), format!("{head}{m}{step}")).unwrap_err().to_string();
        let e = v("arch = [\"a\"]\n");
        assert!(e.starts_with("s.toml:5:1: field `matrix.arch`") && e.contains("cannot be a matrix parameter"), "{e}");
        let e = v("x = []\n");
        assert!(e.contains("`x` has no values"), "{e}");
        let e = v("x = [\"it's\"]\n");
        assert!(e.contains("quotes"), "{e}");
        let e = v("x = [{ part = \"p\" }]\n");
        assert!(e.contains("needs a `name`"), "{e}");
        let e = v("x = [\"a\", \"a\"]\n");
        assert!(e.contains("value `a` twice"), "{e}");
        let e = v("x = [\"a\"]\n");
        assert!(e.starts_with("s.toml:9:12: field `matrix`") && e.contains("no field `nope`"), "{e}");
    }

    #[test]
    fn bad_duration_and_regex_are_refused_at_the_value() {
        let err =
            parse(&format!("{HEAD}[[step]]\naction = \"wait_ssh\"\ntimeout = \"soon\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:7:11:"), "{err}");
        assert!(err.contains("not a duration"), "{err}");
        let err = parse(&format!("{HEAD}[[step]]\naction = \"expect\"\npattern = \"(\"\n")).unwrap_err().to_string();
        assert!(err.starts_with("s.toml:7:11:"), "{err}");
        assert!(err.contains("regex"), "{err}");
    }

    #[test]
    fn missing_action_and_header_fields() {
        let err = parse(&format!("{HEAD}[[step]]\ntimeout = \"1s\"\n")).unwrap_err().to_string();
        assert!(err.contains("missing field `action`"), "{err}");
        let err = parse("[scenario]\nname = \"t\"\n[[step]]\naction = \"power_on\"\n").unwrap_err().to_string();
        assert!(err.contains("missing field `boards`"), "{err}");
        let err = parse(
            "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64\"]\ncolour = 1\n[[step]]\naction = \"power_on\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("s.toml:4:1: field `colour`"), "{err}");
    }

    #[test]
    fn unknown_board_points_at_the_entry() {
        let s = parse(
            "[scenario]\nname = \"t\"\nboards = [\"qemu-x86_64\", \"qemu-riscv\"]\n[[step]]\naction = \"power_on\"\n",
        )
        .unwrap();
        let err = s.resolve_boards().unwrap_err().to_string();
        assert!(err.starts_with("s.toml:3:26: field `boards`: unknown board `qemu-riscv`"), "{err}");
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = crate::rundir::workspace_root().join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if is_scenario_file(&p) {
                for s in Scenario::load_variants(&p).unwrap_or_else(|e| panic!("{e}")) {
                    s.resolve_boards().unwrap();
                    s.recipe_path(&crate::rundir::workspace_root()).unwrap();
                    n += 1;
                }
            }
        }
        assert!(n >= 1, "no scenarios in {}", dir.display());
    }
}
