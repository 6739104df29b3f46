"""Getting models onto boards: the self-contained device bundle (``bundle``) and its run on
emulated 64-bit ARM (``arm64``)."""
