"""What several pages share: the frame (`sidebar`: page config and navigation), the active dataset and run
(`state`), long dataset work in the background (`scans`), cached loaders (`loaders`), the run picker
(`run_picker`), image display (`images`) and the charts' palette and layout (`charts`)."""
