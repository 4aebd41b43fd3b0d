# Loads provisioning/Vagrantfile with a stand-in for Vagrant's configuration objects and
# prints, as JSON, what it configures: the box, and the machines in definition order with
# their networks, memory and provisioners. Usage: ruby vagrant_stub.rb Vagrantfile
require "json"

class Provider
  attr_reader :settings
  def initialize = @settings = {}
  def method_missing(name, *args)
    return super unless name.to_s.end_with?("=")
    @settings[name.to_s.chomp("=")] = args.first
  end
  def respond_to_missing?(name, include_private = false) = name.to_s.end_with?("=") || super
end

class VM
  attr_accessor :box, :box_check_update, :hostname
  attr_reader :machines, :networks, :provisioners, :provider_settings, :synced_folders
  def initialize
    @machines = []
    @networks = []
    @provisioners = []
    @provider_settings = {}
    @synced_folders = []
  end
  def define(name)
    machine = Machine.new(name)
    yield machine
    @machines << machine
  end
  def network(kind, **options) = @networks << { "kind" => kind, **options.transform_keys(&:to_s) }
  def provision(name, **options) = @provisioners << { "name" => name, **options.transform_keys(&:to_s) }
  def synced_folder(src, dest, **options) = @synced_folders << [src, dest, options]
  def provider(_name)
    p = Provider.new
    yield p
    @provider_settings.merge!(p.settings)
  end
end

# node.trigger.after :up, :provision do |t| ... end
class Trigger
  attr_accessor :name, :info, :run, :run_remote, :on_error
end

class Triggers
  attr_reader :recorded
  def initialize = @recorded = []
  def after(*actions)
    t = Trigger.new
    yield t
    @recorded << { "when" => "after", "actions" => actions.map(&:to_s), "name" => t.name,
                   "run" => t.run&.transform_keys(&:to_s), "on_error" => t.on_error&.to_s }
  end
end

class Machine
  attr_reader :name, :vm, :trigger
  def initialize(name)
    @name = name
    @vm = VM.new
    @trigger = Triggers.new
  end
  def to_h
    { "name" => name, "hostname" => vm.hostname, "networks" => vm.networks,
      "provider" => vm.provider_settings, "provisioners" => vm.provisioners,
      "triggers" => trigger.recorded }
  end
end

class Config
  attr_reader :vm
  def initialize = @vm = VM.new
end

module Vagrant
  def self.configure(_version)
    config = Config.new
    yield config
    $stdout.puts JSON.generate("box" => config.vm.box, "provider" => config.vm.provider_settings,
                               "synced_folders" => config.vm.synced_folders,
                               "machines" => config.vm.machines.map(&:to_h))
  end
end

load ARGV.fetch(0)
