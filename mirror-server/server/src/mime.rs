//! Content-Type by file extension; unknown types are application/octet-stream. Files are never
//! transformed, whatever their type.

pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" | "md" | "asc" | "sha256sum" | "sha512sum" | "md5sum" | "sums" => "text/plain; charset=utf-8",
        "css" => "text/css",
        "js" => "application/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "rpm" | "srpm" => "application/x-rpm",
        "deb" | "udeb" | "ddeb" => "application/vnd.debian.binary-package",
        "iso" => "application/x-iso9660-image",
        "img" | "raw" | "qcow2" => "application/octet-stream",
        "gz" | "tgz" => "application/gzip",
        "xz" | "txz" => "application/x-xz",
        "zst" | "zstd" => "application/zstd",
        "bz2" => "application/x-bzip2",
        "lz4" => "application/x-lz4",
        "zip" => "application/zip",
        "tar" => "application/x-tar",
        "sig" | "gpg" => "application/pgp-signature",
        "pem" | "crt" => "application/x-pem-file",
        "torrent" => "application/x-bittorrent",
        "zsync" => "application/x-zsync",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::content_type;

    #[test]
    fn package_formats_and_unknowns() {
        assert_eq!(content_type("repomd.xml"), "application/xml");
        assert_eq!(content_type("foo-1.0.x86_64.rpm"), "application/x-rpm");
        assert_eq!(content_type("Packages.XZ"), "application/x-xz");
        assert_eq!(content_type("lastsync"), "application/octet-stream");
        assert_eq!(content_type("SHA256SUMS.asc"), "text/plain; charset=utf-8");
    }
}
