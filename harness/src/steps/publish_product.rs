//! `publish_product`: Make `version` the `[product]`'s release: the main's
//! part built from recipe `main` for the main's arch, the sub's from `sub`
//! for the sub's, each served as a release of its own, and
//! `/api/products/<name>` answering the version and both parts' release
//! APIs. The main's agent takes it on its next check.

use super::prelude::*;
use crate::product::Role;

/// Publish a release of the two-board product.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishProduct {
    /// The product's version (each part keeps its recipe's own).
    pub version: String,
    /// The recipe of the main's part (`images/recipes/<main>.toml`).
    pub main: toml::Spanned<String>,
    /// The recipe of the sub's part.
    pub sub: toml::Spanned<String>,
}

impl StepKind for PublishProduct {
    fn lab(&self) -> bool {
        true
    }

    fn images(&self) -> Vec<&toml::Spanned<String>> {
        vec![&self.main, &self.sub]
    }

    fn images_mut(&mut self) -> Vec<&mut toml::Spanned<String>> {
        vec![&mut self.main, &mut self.sub]
    }

    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        if cx.scenario.product.is_none() {
            return Err(cx.at("action", "publish_product needs a [product] table (its main and sub machines)"));
        }
        for (field, recipe) in [("main", &self.main), ("sub", &self.sub)] {
            let path = cx.root.join("images").join("recipes").join(format!("{}.toml", recipe.get_ref()));
            if !path.is_file() {
                let msg = format!("no image recipe `{}` ({} does not exist)", recipe.get_ref(), path.display());
                return Err(cx.at(field, msg));
            }
        }
        cx.server = true;
        Ok(())
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let spec = r.scenario.product.as_ref().expect("checked: a [product]");
        let lab = r.product.clone().ok_or_else(|| Error::infra("the product's link is not set up"))?;
        let main = super::serve_release::release(r, &self.main, lab.arch_of(Role::Main)).await?;
        let sub = super::serve_release::release(r, &self.sub, lab.arch_of(Role::Sub)).await?;
        let (main_version, sub_version) = (main.version.clone(), sub.version.clone());
        let server = r.server.clone().ok_or_else(|| Error::infra("the update server is not running"))?;
        server.set_product(spec.name.get_ref(), &self.version, main, sub);
        r.record(Event::ProductPublished {
            product: spec.name.get_ref().clone(),
            version: self.version.clone(),
            main: main_version,
            sub: sub_version,
        });
        Ok(())
    }
}
