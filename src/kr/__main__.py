from kr.cli import main

main()
