//! Keepers: stopped containers that reference images so that the engine's GC (`docker
//! image prune -a`, which removes every image no container uses) leaves those images alone.
//!
//! A keeper is created from the image's id, never started, and carries
//! [`LABEL_MANAGED`], [`LABEL_INSTANCE`] and [`LABEL_PIN`] (the reference kept). The
//! leftover reaper skips it; [`DockerExecutor::release_images`] removes the keepers of
//! references no longer kept, and [`DockerExecutor::keep_image`] replaces a keeper whose
//! reference now names another image (so the old image is the GC's again).

use std::collections::HashMap;

use bollard::{
    models::{ContainerCreateBody, HostConfig},
    query_parameters::ListContainersOptionsBuilder,
};
use tracing::debug;

use super::{DockerExecutor, engine_error, lifecycle::remove_container};
use crate::{ExecError, LABEL_INSTANCE, LABEL_MANAGED, LABEL_PIN};

/// The keeper's command: never run (the container is never started), but an image with
/// neither `ENTRYPOINT` nor `CMD` cannot be created without one.
const KEEPER_COMMAND: &str = "/pipewright-keeps-this-image";

/// One keeper container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptImage {
    /// The container's id.
    pub container: String,
    /// The reference it keeps (its [`LABEL_PIN`]).
    pub reference: String,
    /// The image it references (`sha256:…`).
    pub image_id: String,
}

impl DockerExecutor {
    /// The keepers of `instance`.
    pub async fn kept_images(&self, instance: &str) -> Result<Vec<KeptImage>, ExecError> {
        let filters = HashMap::from([(
            "label",
            vec![
                LABEL_PIN.to_owned(),
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_INSTANCE}={instance}"),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| engine_error("list the keepers of images", source))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let reference = c.labels?.remove(LABEL_PIN)?;
                Some(KeptImage {
                    container: c.id?,
                    reference,
                    image_id: c.image_id.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Makes sure a keeper of `instance` references the image `reference` names now:
    /// creates one if there is none (or if the keeper references an older image, which it
    /// then removes). `Ok(None)`: the engine has no image of that reference (pull it first);
    /// `Ok(Some(true))`: a keeper was created.
    pub(crate) async fn keep_image_now(
        &self,
        instance: &str,
        reference: &str,
    ) -> Result<Option<bool>, ExecError> {
        let Some(image_id) = self.find_image(reference).await? else {
            return Ok(None);
        };
        let kept = self.kept_images(instance).await?;
        let mut current = false;
        for keeper in kept.iter().filter(|k| k.reference == reference) {
            if keeper.image_id == image_id && !current {
                current = true;
                continue;
            }
            self.remove_keeper(keeper).await?;
        }
        if current {
            return Ok(Some(false));
        }
        let labels = HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_INSTANCE.to_owned(), instance.to_owned()),
            (LABEL_PIN.to_owned(), reference.to_owned()),
        ]);
        let body = ContainerCreateBody {
            image: Some(image_id.clone()),
            entrypoint: Some(vec![KEEPER_COMMAND.to_owned()]),
            cmd: Some(Vec::new()),
            labels: Some(labels),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_owned()),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let created = self
            .docker
            .create_container(None, body)
            .await
            .map_err(|source| engine_error(format!("create a keeper of {reference}"), source))?;
        debug!(
            container = created.id,
            image = reference,
            id = image_id,
            "keeping image"
        );
        Ok(Some(true))
    }

    /// Removes the keepers of `instance` whose reference is not in `keep`; how many.
    pub(crate) async fn release_images_now(
        &self,
        instance: &str,
        keep: &[String],
    ) -> Result<usize, ExecError> {
        let mut removed = 0;
        for keeper in self.kept_images(instance).await? {
            if !keep.contains(&keeper.reference) {
                removed += usize::from(self.remove_keeper(&keeper).await?);
            }
        }
        Ok(removed)
    }

    async fn remove_keeper(&self, keeper: &KeptImage) -> Result<bool, ExecError> {
        let removed = remove_container(&self.docker, &keeper.container)
            .await
            .map_err(|source| {
                engine_error(format!("remove the keeper of {}", keeper.reference), source)
            })?;
        debug!(
            container = keeper.container,
            image = keeper.reference,
            "released image"
        );
        Ok(removed)
    }
}
