//! `product_agent`: Make a machine a board of the scenario's `[product]`:
//! write its agent's config (`/data/devlab/product.conf`: its role, its end
//! of the private link; on the main also the update server, the product's
//! name, the check interval and the key the sub's image accepts, which the
//! main logs in with over the link) and start the agent; rcS starts it on
//! every later boot (see `fixtures/rootfs/usr/sbin/devlab-product`).

use super::prelude::*;
use crate::product::{Role, MAIN_ADDR, SUB_ADDR};

/// Where the agent's config and the main's key live (the data partition:
/// they survive updates).
const CONF: &str = "/data/devlab/product.conf";
const KEY: &str = "/data/devlab/product.key";

/// Make a machine the main or the sub of the scenario's `[product]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductAgent {}

impl StepKind for ProductAgent {
    fn check(&self, cx: &mut CheckCx<'_>) -> Result<()> {
        let Some(product) = &cx.scenario.product else {
            return Err(cx.at("action", "product_agent needs a [product] table (its main and sub machines)"));
        };
        if let Some(m) = cx.machine.as_deref().filter(|m| product.role_of(m).is_none()) {
            let msg = format!(
                "`{m}` is neither the product's main (`{}`) nor its sub (`{}`)",
                product.main.get_ref(),
                product.sub.get_ref()
            );
            return Err(cx.at("on", msg));
        }
        cx.need_ssh()
    }

    async fn run(&self, r: &mut Run<'_>, _placed: &PlacedStep) -> Result<()> {
        let spec = r.scenario.product.as_ref().expect("checked: a [product]");
        let role = spec.role_of(&r.name).expect("checked: the main or the sub");
        let lab = r.product.clone().ok_or_else(|| Error::infra("the product's link is not set up"))?;
        let link = r.link.clone().ok_or_else(|| Error::infra("the machine has no end of the product's link"))?;
        let conf = match role {
            Role::Sub => format!("ROLE=sub\nLINK_MAC={}\nLINK_ADDR={SUB_ADDR}\n", link.mac),
            Role::Main => {
                let server = r.server.clone().ok_or_else(|| Error::infra("the update server is not running"))?;
                let peer = SUB_ADDR.split('/').next().expect("an address");
                format!(
                    "ROLE=main\nLINK_MAC={}\nLINK_ADDR={MAIN_ADDR}\nPEER={peer}\nKEY={KEY}\nSERVER=http://{}\n\
                     PRODUCT={}\nINTERVAL={}\n",
                    link.mac,
                    server.guest_address(),
                    spec.name.get_ref(),
                    spec.interval.0.as_secs().max(1),
                )
            }
        };
        super::fleet_agent::wait_health_check(r).await?;
        if role == Role::Main {
            let key = blocking(move || dropbear_key(&lab.sub_key)).await?;
            let up = r.ssh()?.upload(key, KEY, 0o600, Duration::from_secs(30)).await;
            up.map_err(|e| r.failure(format!("copying the sub's key to the main: {e}")))?;
        }
        let event = Event::ProductAgent { role: role.as_str().into() };
        super::fleet_agent::start_agent(r, event, CONF, "devlab-product", conf).await
    }
}

/// The sub's client key (OpenSSH PEM) as dropbear's `dbclient` reads it.
fn dropbear_key(openssh: &std::path::Path) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir().map_err(|e| Error::infra(format!("a temp folder: {e}")))?;
    let out = dir.path().join("key");
    let run = std::process::Command::new("dropbearconvert")
        .args(["openssh", "dropbear"])
        .arg(openssh)
        .arg(&out)
        .output()
        .map_err(|e| Error::infra(format!("dropbearconvert (Debian package dropbear-bin): {e}")))?;
    if !run.status.success() {
        let err = String::from_utf8_lossy(&run.stderr);
        return Err(Error::infra(format!("dropbearconvert {}: {}", openssh.display(), err.trim())));
    }
    std::fs::read(&out).map_err(|e| Error::infra(format!("reading {}: {e}", out.display())))
}
