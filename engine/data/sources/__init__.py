"""One reader per dataset format (class folders, label files, CSV, .npz, zip archives, built-ins), all behind
`detect.resolve_source(spec)`, in the manner of timm's `data/readers`."""
