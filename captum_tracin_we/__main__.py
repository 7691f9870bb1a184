#!/usr/bin/env python3

from captum_tracin_we._cli import main

main()
