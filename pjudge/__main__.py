from pjudge.cli import main

main()
