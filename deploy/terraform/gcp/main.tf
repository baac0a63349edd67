terraform {
  required_providers {
    google = { source = "hashicorp/google", version = "~> 5.0" }
  }
}

variable "config_server_url" {
  type = string
}

variable "bootstrap_token" {
  type      = string
  sensitive = true
}

variable "node_count" {
  type    = number
  default = 10
}

variable "machine_type" {
  type    = string
  default = "a2-highgpu-8g"
}

variable "zone" {
  type    = string
  default = "us-central1-a"
}

variable "network" {
  type    = string
  default = "default"
}

variable "prometheus_cidr" {
  type = string
}

resource "google_compute_firewall" "aami_exporters" {
  name          = "aami-exporters"
  network       = var.network
  source_ranges = [var.prometheus_cidr]
  target_tags   = ["aami-node"]

  allow {
    protocol = "tcp"
    ports    = ["9100", "9400"]
  }
}

resource "google_compute_instance" "gpu_node" {
  count        = var.node_count
  name         = "ml-training-node-${count.index + 1}"
  machine_type = var.machine_type
  zone         = var.zone
  tags         = ["aami-node"]

  boot_disk {
    initialize_params {
      image = "ubuntu-os-cloud/ubuntu-2204-lts"
      size  = 200
    }
  }

  network_interface {
    network = var.network
  }

  scheduling {
    on_host_maintenance = "TERMINATE" # required for GPUs
  }

  metadata_startup_script = templatefile("${path.module}/startup.sh.tpl", {
    config_server_url = var.config_server_url
    bootstrap_token   = var.bootstrap_token
    machine_type      = var.machine_type
  })

  service_account {
    scopes = ["compute-ro", "storage-ro"]
  }
}
