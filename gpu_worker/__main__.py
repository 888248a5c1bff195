from gpu_worker.main import main

main()
