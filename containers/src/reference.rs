//! Image references as the engine reads them: which registry a reference names
//! (`host[:port]/path[:tag][@digest]`, Docker Hub when the first component is no host).

/// Docker Hub, the registry of a reference that names none (`busybox:1.36`,
/// `bitnami/kubectl:1.31`).
pub const DOCKER_HUB: &str = "docker.io";

/// The registry host (`host` or `host:port`, in lower case) of an image reference.
///
/// The rules are the engine's (distribution's `ParseNormalizedNamed`): the part before the
/// first `/` is a registry when it contains a `.` or a `:`, is `localhost`, or has an upper
/// case letter; otherwise, and when there is no `/`, the registry is Docker Hub
/// (`index.docker.io` is Docker Hub too). A tag or digest never changes the registry:
/// `127.0.0.1:5000/app:1@sha256:…` is on `127.0.0.1:5000`.
pub fn registry_host(reference: &str) -> String {
    let Some((first, _)) = reference.split_once('/') else {
        return DOCKER_HUB.to_owned();
    };
    let is_host = first.contains(['.', ':'])
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase());
    if !is_host {
        return DOCKER_HUB.to_owned();
    }
    normalize_host(first)
}

/// A registry host as configured or as found in a reference, compared the way the engine
/// does: in lower case, Docker Hub's aliases (`index.docker.io`, `registry-1.docker.io`)
/// as `docker.io`.
pub fn normalize_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_of_a_reference() {
        let cases = [
            ("busybox", "docker.io"),
            ("busybox:1.36", "docker.io"),
            ("bitnami/kubectl:1.31", "docker.io"),
            ("library/busybox@sha256:abc", "docker.io"),
            ("docker.io/library/busybox", "docker.io"),
            ("index.docker.io/library/busybox:1", "docker.io"),
            (
                "gitea.arcodange.lab/arcodange-org/runner-images:ubuntu-latest-ca",
                "gitea.arcodange.lab",
            ),
            ("Gitea.Arcodange.Lab/org/app:1", "gitea.arcodange.lab"),
            ("127.0.0.1:5000/org/app:1@sha256:abc", "127.0.0.1:5000"),
            ("127.0.0.1:5000/app", "127.0.0.1:5000"),
            ("localhost/app:1", "localhost"),
            ("localhost:5000/a/b/c:tag", "localhost:5000"),
            ("Registry/app", "registry"),
            ("sha256:0123abcd", "docker.io"),
            ("team/app:with:colons", "docker.io"),
        ];
        for (reference, host) in cases {
            assert_eq!(registry_host(reference), host, "{reference}");
        }
    }
}
