from ops_platform.cli.main import console_main

console_main()
