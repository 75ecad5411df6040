//! `*.jsonnet` files of directory sources, evaluated as Argo CD's repo-server does:
//! imports relative to the importing file, then the app directory, then
//! `directory.jsonnet.libs` (relative to the repository root); `extVars` and
//! `tlas` with `$ARGOCD_APP_*` substituted in their values, `code: true`
//! evaluated as Jsonnet. Unlike Argo CD, an import can never leave the
//! repository: a manifest must not be able to read the controller's files.
//!
//! jrsonnet values are `!Send`, so an [`Evaluator`] lives on the one blocking
//! thread of one render.

use crate::envsubst::envsubst;
use crate::{Ctx, RenderError, manifest};
use ferry_model::JsonnetSource;
use jrsonnet_evaluator::{
    AsPathLike, IStr, ImportResolver, SourcePath, State, apply_tla,
    error::{Error as JrError, ErrorKind},
    manifest::JsonFormat,
    tla::TlaArg,
    trace::{CompactFormat, PathResolver, TraceFormat},
};
use jrsonnet_gcmodule::Acyclic;
use jrsonnet_ir::{SourceFifo, SourceFile};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Resolves like Jsonnet's file importer (next to the importing file, then
/// the library paths), but decides on the path alone before touching the
/// file system: nothing outside `root` is read, stat'ed or opened, so an
/// import can neither block on a FIFO nor tell which files the controller has.
#[derive(Acyclic)]
struct ConfinedResolver {
    jpaths: Vec<PathBuf>,
    root: PathBuf,
}

impl ConfinedResolver {
    fn outside(path: &Path) -> JrError {
        ErrorKind::RuntimeError(IStr::from(format!(
            "import {:?} resolves outside the repository",
            path.display()
        )))
        .into()
    }

    fn inside(&self, candidate: &Path) -> bool {
        crate::fsutil::normalize(candidate).starts_with(&self.root)
    }
}

impl ImportResolver for ConfinedResolver {
    fn resolve_from(
        &self,
        from: &SourcePath,
        path: &dyn AsPathLike,
    ) -> jrsonnet_evaluator::Result<SourcePath> {
        let wanted: PathBuf = path.as_path().as_ref().to_path_buf();
        let mut bases: Vec<PathBuf> = Vec::new();
        if let Some(dir) = from.path().and_then(Path::parent) {
            bases.push(dir.to_path_buf());
        }
        bases.extend(self.jpaths.iter().cloned());
        for base in bases {
            let candidate = base.join(&wanted);
            if !self.inside(&candidate) {
                return Err(Self::outside(&wanted));
            }
            // Symlinks were confined by the repository-wide check; canonical
            // paths keep the import cache keyed on one name per file.
            let Ok(canonical) = candidate.canonicalize() else {
                continue;
            };
            if !canonical.starts_with(&self.root) {
                return Err(Self::outside(&wanted));
            }
            if canonical.is_file() {
                return Ok(SourcePath::new(SourceFile::new(canonical)));
            }
        }
        Err(ErrorKind::ImportFileNotFound(from.clone(), path.as_path().to_owned()).into())
    }

    fn load_file_contents(&self, resolved: &SourcePath) -> jrsonnet_evaluator::Result<Vec<u8>> {
        // `code: true` extVars and TLAs: in-memory code, not a file.
        if let Some(inline) = resolved.downcast_ref::<SourceFifo>() {
            return Ok(inline.1.to_vec());
        }
        let path = resolved
            .downcast_ref::<SourceFile>()
            .map(SourceFile::path)
            .filter(|p| p.starts_with(&self.root))
            .ok_or_else(|| Self::outside(resolved.path().unwrap_or(Path::new("?"))))?;
        std::fs::read(path)
            .map_err(|e| ErrorKind::ImportIo(format!("{}: {e}", path.display())).into())
    }
}

/// One render's Jsonnet state: the import cache is shared by every file.
pub(crate) struct Evaluator {
    state: State,
    root: PathBuf,
    tlas: HashMap<IStr, TlaArg>,
}

impl Evaluator {
    pub(crate) fn new(ctx: &Ctx, spec: &JsonnetSource) -> Result<Self, RenderError> {
        let mut jpaths = vec![ctx.app.clone()];
        for (i, lib) in spec.libs.iter().enumerate() {
            jpaths.push(library_path(&ctx.root, lib).map_err(|why| {
                RenderError::InvalidSource(format!("directory.jsonnet.libs[{i}] {lib:?}: {why}"))
            })?);
        }
        let stdlib =
            jrsonnet_stdlib::ContextInitializer::new(PathResolver::Relative(ctx.root.clone()));
        for v in &spec.ext_vars {
            let value = envsubst(&v.value, &ctx.build_env);
            if v.code {
                // Inline code is parsed when first read; errors surface there, naming the variable.
                let _ = stdlib.add_ext_code(&v.name, value);
            } else {
                stdlib.add_ext_str(IStr::from(v.name.as_str()), IStr::from(value.as_str()));
            }
        }
        #[allow(clippy::mutable_key_type)]
        let tlas: HashMap<IStr, TlaArg> = spec
            .tlas
            .iter()
            .map(|v| {
                let value = envsubst(&v.value, &ctx.build_env);
                let arg = if v.code {
                    TlaArg::InlineCode(value)
                } else {
                    TlaArg::String(IStr::from(value.as_str()))
                };
                (IStr::from(v.name.as_str()), arg)
            })
            .collect();
        let mut builder = State::builder();
        builder
            .import_resolver(ConfinedResolver {
                jpaths,
                root: ctx.root.clone(),
            })
            .context_initializer(stdlib);
        Ok(Evaluator {
            state: builder.build(),
            root: ctx.root.clone(),
            tlas,
        })
    }

    /// Evaluates one file into objects: an object, an array of objects, or `List`s of them.
    pub(crate) fn render_file(&self, path: &Path, shown: &str) -> Result<Vec<Value>, RenderError> {
        let _guard = self.state.try_enter();
        let fail = |e: JrError| RenderError::Jsonnet {
            file: shown.to_string(),
            message: self.format_error(&e),
        };
        let val = self.state.import(path).map_err(fail)?;
        let val = apply_tla(&self.tlas, val).map_err(fail)?;
        let json = val.manifest(JsonFormat::minify()).map_err(fail)?;
        let value: Value = serde_json::from_str(&json).map_err(|e| RenderError::Jsonnet {
            file: shown.to_string(),
            message: format!("output is not JSON: {e}"),
        })?;
        manifest::objects_from_value(value, shown)
    }

    fn format_error(&self, e: &JrError) -> String {
        let format = CompactFormat {
            resolver: PathResolver::Relative(self.root.clone()),
            max_trace: 10,
            padding: 2,
        };
        let text = match e.error() {
            ErrorKind::ImportSyntaxError { error, .. } => {
                format!("syntax error: {}", error.message)
            }
            _ => format.format(e).unwrap_or_else(|_| e.error().to_string()),
        };
        // Paths are shown repository-relative; never the controller's cache directory.
        let root = format!("{}/", self.root.display());
        text.replace(&root, "").trim_end().to_string()
    }
}

fn library_path(root: &Path, lib: &str) -> Result<PathBuf, String> {
    let joined = root.join(lib.trim_start_matches('/'));
    match joined.canonicalize() {
        Ok(p) if p.starts_with(root) => Ok(p),
        Ok(_) => Err("points outside the repository".into()),
        // A missing library directory only matters once something imports from it, and that
        // import then fails naming the file.
        Err(_) => Ok(joined),
    }
}
